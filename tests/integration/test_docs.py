"""The documentation: the site builds strictly and loads nothing from another host, every link
resolves (on the site, and in the repository for links between Markdown files), the README stays
short, the code blocks marked to run do run, the generated configuration reference has a row for
every key and the metrics glossary a section for every metric, and the settings the pages name
exist. ``test_docs_browser.py`` opens the site in a browser.

Runnable blocks (the convention, documented in ``docs/index.md``): an HTML comment right before a
fenced block in ``README.md`` or ``docs/**/*.md``:

- ``<!-- run -->``: the block runs as written (``python`` blocks with this interpreter, ``bash``
  blocks one ``textrl ...`` command after another);
- ``<!-- run: tiny -->``: a ``bash`` block whose ``textrl`` commands run with :data:`TINY`
  appended, so a command written for SmolLM2 (the main job, the pipeline) runs on TinyStories-656K
  in seconds with the same keys.

Blocks run in a temporary directory, with ``../shared/assets`` in their text pointed at the
assets the other tests use. A ``bash`` block may hold only ``textrl`` commands (comments and ``\\``
continuations allowed).
"""

from __future__ import annotations

import html.parser
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import ASSETS, run_main

ROOT = Path(__file__).resolve().parents[2]
README_MAX_LINES = 150
RUN = re.compile(r"^<!-- run(?::\s*(?P<mode>[\w-]+))? -->\s*\n```(?P<lang>\w+)\n(?P<code>.*?)\n```", re.M | re.S)
TINY = [
    "policy=tinystories",
    "trainer.updates=2",
    "trainer.progress_bar=false",
    "rollout.batch_size=4",
    "algo.minibatch_size=4",
    "env.max_new_tokens=8",
    "sft.max_examples=16",
    "sft.batch_size=8",
    "sft.max_length=64",
    "rm.max_examples=16",
    "rm.max_eval_examples=8",
    "rm.batch_size=4",
    "rm.max_length=64",
    "eval.num_prompts=4",
    "eval.samples=2",
    "data.max_prompts=32",
]
"""Overrides appended to each ``textrl`` command of a ``<!-- run: tiny -->`` block (those whose key
the command sets itself are left out: the command's value wins)."""


def doc_files() -> list[Path]:
    """The README and every Markdown page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def runnable_blocks() -> list[tuple[str, str, str, str]]:
    """``(id, lang, mode, code)`` of every block marked to run, ``mode`` ``""`` or ``"tiny"``."""
    blocks = []
    for path in doc_files():
        for n, match in enumerate(RUN.finditer(path.read_text(encoding="utf-8"))):
            blocks.append((f"{path.relative_to(ROOT)}#{n}", match["lang"], match["mode"] or "", match["code"]))
    return blocks


def commands(code: str) -> list[list[str]]:
    """The commands of a ``bash`` block: continuations joined, comments dropped, split as the shell would."""
    joined = re.sub(r"\\\n", " ", code)
    return [args for line in joined.splitlines() if (args := shlex.split(line, comments=True))]


def with_assets(text: str) -> str:
    """``text`` with ``../shared/assets`` pointing at the assets the tests use."""
    return text.replace("../shared/assets", str(ASSETS))


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES}"
    text = "\n".join(lines)
    results = text.split("## Results", 1)[1].split("\n## ", 1)[0]  # the measured table, with links
    assert "| after PPO |" in results and "docs/benchmarks/calculator.md" in results
    assert "<!-- run -->" in text, "the README's environment example must be marked to run"


def test_readme_setup_commands_are_what_ci_runs():
    """``.ci/run`` runs the README's test command verbatim, as a new user would: in a fresh virtual
    environment (made with ``python3 -m venv`` in a git-ignored folder, removed first) that it
    activates before the command."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(pip install torch[^\n]*)\n```", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) == 2, blocks
    assert blocks[1] in ci
    venv = re.search(r'^venv=(\S+)\nrm -rf "\$venv" && python3 -m venv "\$venv"', ci, re.M)
    assert venv, "CI makes a fresh virtual environment"
    activate = ci.index('. "$venv/bin/activate"')
    assert ci.index("python3 -m venv") < activate < ci.index(blocks[1])
    assert f"/{venv[1]}/" in (ROOT / ".gitignore").read_text().splitlines(), f"{venv[1]} must be git-ignored"
    assert 'if [ "$rc" -eq 5 ]; then' in ci and "exit 1" in ci.split('if [ "$rc" -eq 5 ]; then', 1)[1]


def test_site_builds_strict(built_site):
    """``mkdocs build --strict`` (the ``built_site`` fixture): no broken link, cross-reference, nav
    entry or docstring section."""
    home = (built_site / "index.html").read_text(encoding="utf-8")
    assert "textrl" in home
    reference = (built_site / "reference" / "configuration" / "index.html").read_text(encoding="utf-8")
    assert "algo.kl.target" in reference
    assert "<code>algo=grpo</code>" in reference and "<code>reward=regex</code>" in reference, "the bundled plugins"
    maths = (built_site / "concepts" / "maths" / "index.html").read_text(encoding="utf-8")
    assert 'class="autorefs autorefs-internal"' in maths, "the maths page links the functions that implement it"
    api = (built_site / "reference" / "api" / "textrl" / "index.html").read_text(encoding="utf-8")
    assert ":func:`" not in api and ":class:`" not in api, "Sphinx roles must render as links"
    assert 'class="mermaid"' in (built_site / "concepts" / "data-flow" / "index.html").read_text()
    nav = re.findall(r'<span class="md-ellipsis">\s*(.*?)\s*</span>', home, flags=re.S)
    assert nav and not [title for title in nav if "`" in title], "nav titles are plain text"


EXTERNAL = re.compile(r"^\s*(?:[a-z][a-z0-9+.-]*:)?//", re.I)
"""A URL on another host: ``https://...``, ``http://...`` or protocol-relative ``//host/...``."""
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")
RESOURCE_ATTRIBUTES = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "object": ("data",),
    "embed": ("src",),
    "input": ("src",),
}
"""The attributes through which a page makes the browser fetch something (``<a href>`` is a link, not a resource)."""
LINK_RELATIONS = {"canonical", "alternate", "author", "license", "me"}
"""``<link rel>`` values that name a page without loading it."""


class PageParser(html.parser.HTMLParser):
    """The resources (URLs the browser loads), links (``<a href>``) and element ids of one HTML page."""

    def __init__(self):
        super().__init__()
        self.resources: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag == "link" and LINK_RELATIONS & set((attrs.get("rel") or "").split()):
            return
        for name in RESOURCE_ATTRIBUTES.get(tag, ()):
            value = attrs.get(name)
            if value:
                self.resources += [part.split()[0] for part in value.split(",")] if name == "srcset" else [value]
        if attrs.get("style"):
            self.resources += css_urls(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.resources += css_urls(data)


def css_urls(css: str) -> list[str]:
    """The URLs a stylesheet loads: its ``url(...)`` values and ``@import`` targets."""
    return [a or b for a, b in CSS_URL.findall(css) if not (a or b).startswith("data:")]


def parse_page(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_site_loads_nothing_from_other_hosts(built_site):
    """No page or stylesheet of the site makes the browser fetch a script, style, font or image
    from another host (Google Fonts, a CDN): the pages render on a machine without internet.
    Links to other sites in the text are fine."""
    outside = []
    for page in sorted(built_site.rglob("*.html")):
        outside += [
            f"{page.relative_to(built_site)}: {url}" for url in parse_page(page).resources if EXTERNAL.match(url)
        ]
    for sheet in sorted(built_site.rglob("*.css")):
        outside += [
            f"{sheet.relative_to(built_site)}: {url}" for url in css_urls(sheet.read_text()) if EXTERNAL.match(url)
        ]
    assert not outside, "resources from other hosts:\n" + "\n".join(outside[:20])
    for script in ("tex-svg.js", "mermaid.min.js"):
        vendored = list((built_site / "js" / "vendor").rglob(script))
        assert len(vendored) == 1 and (vendored[0].parent / "LICENSE").is_file(), f"{script} and its licence"


def test_every_internal_link_resolves(built_site, site_url):
    """Every link and resource of every page that stays on the site answers 200 from a server of
    the built site, and a link's ``#fragment`` names an element of the page it points to."""
    pages = {page: parse_page(page) for page in sorted(built_site.rglob("*.html"))}
    ids = {page.relative_to(built_site).as_posix(): parsed.ids for page, parsed in pages.items()}
    targets: dict[str, list[str]] = {}
    for page, parsed in pages.items():
        page_url = urllib.parse.urljoin(site_url, page.relative_to(built_site).as_posix())
        for href in parsed.links + parsed.resources:
            if EXTERNAL.match(href) or href.startswith(("mailto:", "javascript:", "data:")):
                continue
            url = urllib.parse.urljoin(page_url, href)
            targets.setdefault(url, []).append(page.relative_to(built_site).as_posix())
    broken = []
    status: dict[str, int] = {}
    for url, sources in sorted(targets.items()):
        address, _, fragment = url.partition("#")
        if address not in status:
            try:
                with urllib.request.urlopen(address, timeout=10) as response:
                    status[address] = response.status
            except urllib.error.HTTPError as e:
                status[address] = e.code
        if status[address] != 200:
            broken.append(f"{sources[0]}: {url} answers {status[address]}")
            continue
        path = urllib.parse.unquote(urllib.parse.urlparse(address).path).lstrip("/")
        path = path + "index.html" if path.endswith("/") or not path else path
        if fragment and path in ids and urllib.parse.unquote(fragment) not in ids[path]:
            broken.append(f"{sources[0]}: {url} has no element with id {fragment!r}")
    assert len(status) > len(pages), "the check reached every page"
    assert not broken, "\n".join(broken[:30])


MARKDOWN_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def test_links_between_markdown_files_resolve_in_the_repository():
    """A relative link in the README or a docs page points at a file of the repository, so it
    works where the Markdown is read on its own (GitHub, an editor), not only on the built site."""
    broken = []
    for path in doc_files():
        text = FENCE.sub("", path.read_text(encoding="utf-8"))
        text = re.sub(r"`[^`\n]*`", "", text)
        for target in MARKDOWN_LINK.findall(text):
            if EXTERNAL.match(target) or target.startswith(("#", "mailto:")):
                continue
            file = (path.parent / urllib.parse.unquote(target.split("#")[0])).resolve()
            if not file.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "links to files that are not in the repository:\n" + "\n".join(broken)


def hook_module(name: str):
    """``docs/_hooks/<name>.py`` as a module, loaded by path as mkdocs loads it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"textrl_{name}", ROOT / "docs" / "_hooks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_config_reference_has_every_key():
    """Every key of every composed section (:func:`textrl.reference.reference_entries`) has a row
    with a default and a meaning, in the section of its option, and schema keys carry their checks."""
    module = hook_module("config_reference")

    from textrl.plugins import load_plugins
    from textrl.reference import reference_entries

    registry = load_plugins()
    page = module.markdown(registry)
    sections = re.split(r"^## ", page, flags=re.M)[1:]
    by_title = {s.splitlines()[0]: s for s in sections}
    entries = reference_entries(registry)
    assert len(by_title) == len(entries)
    for option, table in entries.items():
        title = "Main job (`textrl`)" if not option else f"`{option}`"
        section = by_title[title]
        keys = re.findall(r"^\| `([^`]+)` \|", section, flags=re.M)
        assert keys == list(table), f"{title}: rows {keys} != composed keys {list(table)}"
        for row in re.findall(r"^\| `.*$", section, flags=re.M):
            cells = re.split(r"(?<!\\)\|", row)[1:-1]
            assert len(cells) == 5 and cells[4].strip(), f"{title}: a row without a meaning: {row}"
    main = by_title["Main job (`textrl`)"]
    assert re.search(r"^\| `rollout.top_p` \| float \| `1.0` \| a number in \(0, 1\] \|", main, flags=re.M)
    assert re.search(
        r"^\| `algo.clip_range` \| float \| `0.2` \| a number &gt; 0 \| policy ratio clip", main, flags=re.M
    )


def test_docs_build_names_a_missing_bundled_plugin():
    """Without an example plugin the reference would silently lack its option; the build warns (a
    strict build fails) naming the option and the folder to install."""
    import dataclasses

    from textrl.plugins import load_plugins

    hooks = hook_module("textrl_docs")
    registry = load_plugins()
    assert hooks.missing_bundled_plugins(registry) == []
    without_grpo = dataclasses.replace(
        registry, algorithms={k: v for k, v in registry.algorithms.items() if k != "grpo"}
    )
    (message,) = hooks.missing_bundled_plugins(without_grpo)
    assert "algo=grpo" in message and "pip install -e plugins/textrl-grpo" in message


def test_metrics_glossary_explains_every_metric(built_site):
    """The generated glossary (``reference/metrics.md``) has one section per metric of
    ``textrl/metrics.py``, each with its unit, meaning, healthy values and what to do when off."""
    from textrl.metrics import METRICS

    page = hook_module("metrics_glossary").markdown()
    sections = re.split(r"^### ", page, flags=re.M)[1:]
    assert sorted(section.splitlines()[0].strip("`") for section in sections) == sorted(METRICS)
    for section in sections:
        assert "- **Healthy**: " in section and "- **When it is off**: " in section, section
    built = (built_site / "reference" / "metrics" / "index.html").read_text(encoding="utf-8")
    assert all(f"<code>{name.replace('<', '&lt;').replace('>', '&gt;')}</code>" in built for name in METRICS)


SETTING = re.compile(
    r"(?<![\w./-])((?:policy|env|data|rollout|reward|algo|interaction|logger|trainer|sft|rm|eval)\.[a-z_]\w*(?:\.[a-z_]\w*)*)"
)
"""A setting's key as the pages write it in inline code (``algo.kl.init``, ``trainer.threads=<n>``)."""
FILE_SUFFIXES = {"py", "json", "jsonl", "yaml", "md", "png", "txt", "gz"}
"""``rollout.py`` or ``eval.json`` is a file, not a setting."""
NOT_SETTINGS = {"algo.lrr"}
"""Written on purpose: getting-started's example of a typo."""


def test_settings_named_in_the_docs_exist():
    """Each setting a page or a metric's explanation names in inline code is a key of the composed
    config (main job or an option's section, the bundled plugins' included), so the pages cannot
    send a reader to a setting that was renamed or never existed."""
    from textrl.metrics import METRICS
    from textrl.plugins import load_plugins
    from textrl.reference import reference_entries

    keys = {key for table in reference_entries(load_plugins()).values() for key in table}
    texts = {str(path.relative_to(ROOT)): path.read_text(encoding="utf-8") for path in doc_files()}
    texts |= {f"textrl/metrics.py {name}": f"{m.meaning} {m.healthy} {m.when_off}" for name, m in METRICS.items()}
    unknown = []
    for source, text in texts.items():
        for span in re.findall(r"`([^`\n]+)`", FENCE.sub("", text)):
            for key in SETTING.findall(span):
                if key.rsplit(".", 1)[-1] in FILE_SUFFIXES or key in NOT_SETTINGS:
                    continue
                if key not in keys and not any(k.startswith(key + ".") for k in keys):
                    unknown.append(f"{source}: {key}")
    assert not unknown, "settings that do not exist:\n" + "\n".join(unknown)


ALGORITHM_PAGES = {
    "ppo.md": ("", "ppo", {}),
    "ppo-ptx.md": ("algo=ppo_ptx", "ppo_ptx", {"ptx_batch_size": 2}),
    "reinforce.md": ("algo=reinforce", "reinforce", {"baseline": "leave_one_out"}),
    "grpo.md": ("algo=grpo", "grpo", {"group_size": 2}),
    "vineppo.md": ("algo=vineppo", "vineppo", {"branch": {"k": 2, "at": "tokens", "every": 2}}),
}
"""``docs/algorithms/<page>`` → (its section of the configuration reference, ``""`` for the main
job; its ``algo=`` option; keyword arguments its update needs on a batch of 2 prompts × 2 responses)."""


def page_section(page: str, title: str) -> str:
    """The text of ``## <title>`` on ``docs/algorithms/<page>``, up to the next ``## ``."""
    text = (ROOT / "docs" / "algorithms" / page).read_text(encoding="utf-8")
    assert f"\n## {title}\n" in text, f"docs/algorithms/{page} has no '## {title}' section"
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_algorithm_page_is_checked():
    pages = {p.name for p in (ROOT / "docs" / "algorithms").glob("*.md")} - {"index.md"}
    assert pages == set(ALGORITHM_PAGES)


def table_cells(row: str) -> list[str]:
    """The cells of a Markdown table row, split at unescaped ``|``, stripped of spaces and backticks."""
    return [cell.strip().strip("`") for cell in re.split(r"(?<!\\)\|", row)[1:-1]]


@pytest.fixture(scope="module")
def configuration_reference() -> str:
    """The generated configuration reference page (Markdown), composed once for the module."""
    from textrl.plugins import load_plugins

    return hook_module("config_reference").markdown(load_plugins())


@pytest.mark.parametrize("page", sorted(ALGORITHM_PAGES))
def test_algorithm_pages_state_the_defaults_of_the_code(page, configuration_reference):
    """Each ``| `algo.<key>` | `<default>` |`` row of a page's settings table says what the generated
    configuration reference says for that algorithm, so a page cannot keep a default the code dropped."""
    option = ALGORITHM_PAGES[page][0]
    reference = configuration_reference
    title = "Main job (`textrl`)" if not option else f"`{option}`"
    section = reference.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    defaults = {cells[0]: cells[2] for cells in map(table_cells, re.findall(r"^\| `.*$", section, flags=re.M))}
    rows = [table_cells(row) for row in re.findall(r"^\| `algo\..*$", page_section(page, "Settings"), flags=re.M)]
    assert rows, f"{page}: no settings rows"
    stated = {cells[0]: cells[1] for cells in rows}
    assert stated == {key: defaults.get(key) for key in stated}, f"{page} against the reference's {title}"


def logged_names(page: str) -> tuple[set[str], set[str]]:
    """``(names, linked)``: the metric names a page lists under "Logged metrics" (``- `name`: ...``
    items, and every name of a page it includes by linking its ``#logged-metrics``), and those of its
    own items that link the glossary."""
    section = page_section(page, "Logged metrics")
    names = set(re.findall(r"^- \[?`([^`]+)`", section, flags=re.M))
    linked = set(re.findall(r"^- \[`([^`]+)`\]\(\.\./reference/metrics\.md#", section, flags=re.M))
    for other in re.findall(r"\]\(([\w-]+\.md)#logged-metrics\)", section):
        names |= logged_names(other)[0]
    return names, linked


@pytest.mark.parametrize("page", sorted(ALGORITHM_PAGES))
def test_algorithm_pages_list_what_each_algorithm_logs(page, tokenizer, tmp_path):
    """A page lists exactly the metrics its algorithm's update returns (one update on a tiny random
    policy), and links the glossary for each one the glossary explains."""
    import copy

    from textrl.algorithms import SetupContext
    from textrl.envs import TokenGenVectorEnv
    from textrl.metrics import metric
    from textrl.plugins import load_plugins
    from textrl.policies import SamplingConfig
    from textrl.rollout.collector import RolloutCollector

    from conftest import length_reward, make_policy

    _, name, kwargs = ALGORITHM_PAGES[page]
    if name == "ppo_ptx":
        (tmp_path / "pretrain.txt").write_text("the dog ran in the park\na girl saw the cat\n")
        kwargs = {**kwargs, "ptx_data": str(tmp_path / "pretrain.txt")}
    policy = make_policy(tokenizer)
    env = TokenGenVectorEnv(
        tokenizer,
        ["the dog", "a girl saw"],
        length_reward,
        num_envs=4,
        max_new_tokens=4,
        max_prompt_tokens=8,
        autoreset_mode="disabled",
    )
    algorithm = load_plugins().algorithms[name](lr=1e-3, minibatch_size=4, **kwargs)
    algorithm.setup(policy, None, SetupContext(tokenizer=tokenizer))
    batch = RolloutCollector(
        env,
        policy,
        copy.deepcopy(policy.lm),
        SamplingConfig(),
        seed=0,
        samples_per_prompt=2,
        branching=algorithm.branching,
    ).collect()
    logged = set(algorithm.update(batch))
    names, linked = logged_names(page)
    assert names == logged, f"{page}: listed but not logged {names - logged}; logged but not listed {logged - names}"
    own = set(re.findall(r"^- \[?`([^`]+)`", page_section(page, "Logged metrics"), flags=re.M))
    assert linked == {n for n in own if metric(n) is not None}, f"{page}: link each glossary metric, only those"


def test_first_code_needs_only_the_installed_packages():
    """The README's environment example (the first code a reader copies) loads its tokenizer from
    an installed package, not from ``../shared/assets`` that only a clone has beside it, so
    ``test_marked_blocks_run`` runs it exactly as printed."""
    readme = [
        code for block_id, lang, _, code in runnable_blocks() if block_id.startswith("README") and lang == "python"
    ]
    assert readme, "the README's environment example is marked to run"
    assert all("../shared" not in code for code in readme)


@pytest.mark.slow
@pytest.mark.parametrize("block", runnable_blocks(), ids=lambda b: b[0])
def test_marked_blocks_run(block, tmp_path, monkeypatch, capsys, request):
    """The block runs; it skips without the real assets unless it is Python code that does not use them."""
    _, lang, mode, code = block
    if lang != "python" or "../shared" in code:
        request.getfixturevalue("assets")
    monkeypatch.chdir(tmp_path)
    if lang == "python":
        script = tmp_path / "block.py"
        script.write_text(with_assets(code), encoding="utf-8")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
        result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return
    assert lang == "bash", f"a runnable block is python or bash, not {lang}"
    for args in commands(with_assets(code)):
        assert args[0] == "textrl", f"a runnable bash block holds textrl commands only: {args}"
        given = {a.split("=", 1)[0] for a in args[1:]}
        overrides = args[1:] + [t for t in (TINY if mode == "tiny" else []) if t.split("=", 1)[0] not in given]
        if not any(a.startswith("hydra.run.dir=") for a in overrides):
            overrides.append(f"hydra.run.dir={tmp_path / 'run'}")
        result = run_main(overrides, monkeypatch, capsys)
        assert result.returncode == 0, f"textrl {' '.join(overrides)}\n{result.stderr[-3000:]}"
