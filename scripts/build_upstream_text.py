#!/usr/bin/env python3
"""Build a human-written plain-text upstream set (upstream_human.jsonl) from Debian packages.

The set stands in for what small language models are pretrained on: technical reference prose,
tutorial prose, old public-domain English and source code. Run by hand, as root on Debian 12:

    apt-get update && apt-get install -y manpages manpages-dev groff-base perl-doc dict-devil \
        tcl8.6 libtk8.6 tcllib
    python scripts/build_upstream_text.py        # --seed 0 --out src/forgetscope/data/demo

Sources read (nothing downloaded here):
  * /usr/share/man/man[1-8]/*.gz of manpages and manpages-dev, rendered with groff; only pages
    whose own license notice is permissive (verbatim, BSD, MIT, public domain), never GPL pages
  * /usr/share/perl/5.36/pod/*.pod                    (perl-doc: tutorials and reference)
  * /usr/share/dictd/devil.dict.dz                    (dict-devil: The Devil's Dictionary, 1911)
  * *.tcl / *.tm of the Tcl 8.6 and Tk 8.6 libraries and of tcllib under /usr/share/tcltk
  * *.pm of the Perl core modules under /usr/share/perl/5.36

None of these is a source of the fine-tuning tasks (fortunes, KJV, WordNet, Jargon File,
dict-elements, python3.11-doc, CPython), and a final check makes sure that no text here equals
or contains a text of the task_*.jsonl / upstream*.jsonl files already in the output folder.
Deterministic for a given seed and the same package versions (recorded in the SOURCES file).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_demo_data as base  # noqa: E402  (shared helpers: tokenizer, Used, first_sentences, ...)

MAN_ROOT = Path("/usr/share/man")
MAN_PACKAGES = ["manpages", "manpages-dev"]
POD_DIR = Path("/usr/share/perl/5.36/pod")
PERL_LIB = Path("/usr/share/perl/5.36")
TCL_ROOT = Path("/usr/share/tcltk")
TCL_LIBS = ["tcl8.6", "tk8.6", "tcllib*"]  # globbed under TCL_ROOT
DEFAULT_OUT = base.DEFAULT_OUT
OUT_FILE = "upstream_human.jsonl"
SOURCES_FILE = "SOURCES_upstream_human.md"

N_TOTAL = 1200
SHARES = {"manpages": 0.35, "perl_doc": 0.30, "devils_dictionary": 0.10, "tcl_code": 0.12,
          "perl_code": 0.13}
TOKENS = (24, 64)       # SmolLM2 tokens of one text, no BOS
CODE_MAX_CHARS = 400
CODE_LINES = (3, 12)
PER_DOC = 3             # at most this many examples from one man page / POD file / source file
MIN_CONTAIN = 16        # existing texts shorter than this (normalised) are answers, checked for equality only

# Licenses a man page may carry and still be used: SPDX ids and the older %%%LICENSE_START markers.
PERMISSIVE_SPDX = re.compile(r"^(Linux-man-pages-copyleft(-\S+)?|BSD-\S+|MIT|Expat|ISC|0BSD|"
                             r"LicenseRef-public-domain|public-domain)$")

# POD files that are not prose about Perl: release notes, license texts, tables, translations.
POD_SKIP = re.compile(r"^perl(\d+delta|delta|gpl|artistic|toc|hist|uniprops|cn|jp|ko|tw)\.pod$")
# Abbreviations that first_sentences may mistake for a sentence end.
ABBREV_END = re.compile(r"(\b(e\.g|i\.e|cf|vs|viz|etc\.\)|Dr|Mr|Mrs|St|No|Fig|approx)\.|\b[A-Z]\.)$")
MARKUP = re.compile(r"\\f[BIRP(]|\\\(|\\-|(^|\s)\.[A-Z]{1,2}\s|\b[BCEFILSXZ]<|=(head\d?|item|over|back|cut|pod|begin|end|for)\b")
URL_OR_MAIL = re.compile(r"https?:|ftp:|www\.|\S@\S+\.\w|mailto:", re.I)


# ------------------------------------------------------------------------------------------
# shared checks
# ------------------------------------------------------------------------------------------

def prose_ok(text: str) -> bool:
    """Clean prose only: mostly letters, a capital first, sentence punctuation last, balanced
    parentheses and quotes (a sentence cut inside a parenthesis reads badly), no markup, URLs or
    e-mail addresses (those are what a scraper's quality filter would drop)."""
    return (base.mostly_text(text) and text[:1].isupper() and text[-1:] in ".!?" and text.isprintable()
            and not MARKUP.search(text) and not URL_OR_MAIL.search(text) and not ABBREV_END.search(text)
            and text.count("(") == text.count(")") and text.count('"') % 2 == 0)


def cut_prose(text: str) -> str | None:
    """The shortest run of whole leading sentences that passes prose_ok and fits TOKENS."""
    for lo in range(10, 47, 3):
        t = base.first_sentences(text, lo, 48)
        if t is None:
            return None
        n = base.ntokens(t)
        if n > TOKENS[1]:
            return None
        if n >= TOKENS[0] and prose_ok(t):
            return t
    return None


# ------------------------------------------------------------------------------------------
# man pages
# ------------------------------------------------------------------------------------------

def man_files() -> list[tuple[str, Path]]:
    """(package, path) of every real man page (not a link or a `.so` stub) of MAN_PACKAGES."""
    out = []
    for pkg in MAN_PACKAGES:
        res = subprocess.run(["dpkg-query", "-L", pkg], capture_output=True, text=True, check=True)
        for line in res.stdout.splitlines():
            p = Path(line)
            if (re.fullmatch(r"/usr/share/man/man[1-8]/[^/]+\.gz", line) and p.is_file()
                    and not p.is_symlink()):
                out.append((pkg, p))
    return sorted(out, key=lambda x: str(x[1]))


def man_license(roff: str) -> tuple[str, bool]:
    """The license a page declares in its own roff comments, and whether it is permissive."""
    m = re.search(r"SPDX-License-Identifier:\s*(.+)", roff)
    if m:
        expr = m.group(1).strip()
        ids = [t for t in re.split(r"[\s()]+", expr) if t and t not in ("AND", "OR", "WITH")]
        ok = [bool(PERMISSIVE_SPDX.match(t)) for t in ids]
        return expr, bool(ids) and (any(ok) if " OR " in expr else all(ok))
    m = re.search(r"%%%LICENSE_START\(([^)]*)\)", roff)
    if m:
        # Pages with only the project's old license marker are listed under Debian's catch-all GPL-2+
        # entry in /usr/share/doc/manpages/copyright; to ship nothing whose terms are in doubt, they are
        # not used even where the marker names a permissive license.
        return f"LICENSE_START({m.group(1)}) (not used: Debian lists it under GPL-2+)", False
    return "none stated", False


def render_man(roff: str) -> str:
    """Render roff to plain text: one output line per filled paragraph (very long line length),
    no hyphenation, no bold/underline escapes, so paragraphs come out as clean running text."""
    res = subprocess.run(
        ["groff", "-k", "-t", "-man", "-Tutf8", "-P-c", "-P-b", "-P-u", "-rLL=6000n", "-rHY=0"],
        input=roff, capture_output=True, text=True, cwd=MAN_ROOT, timeout=60,
        env={**os.environ, "LC_ALL": "C.UTF-8"})
    return res.stdout


def man_paragraphs(rendered: str) -> list[str]:
    """Top-level paragraphs (indent 7, a single filled line between blank lines) of the
    DESCRIPTION and NOTES sections, subsections included; lists, tags and code blocks have
    other indents or several lines and are left out."""
    out, section, block = [], None, []

    def flush() -> None:
        if section in ("DESCRIPTION", "NOTES") and len(block) == 1:
            line = block[0]
            if re.match(r"^ {7}\S", line):
                out.append(base.squash(line))
        block.clear()

    for line in rendered.splitlines():
        if not line.strip():
            flush()
            continue
        if re.match(r"^[A-Z]", line):
            flush()
            section = line.strip()
            continue
        if re.match(r"^ {3}\S", line) and section in ("DESCRIPTION", "NOTES") and not block:
            continue  # subsection heading: stay in the section
        block.append(line.rstrip())
    flush()
    return out


def man_pool() -> tuple[list[tuple[str, str]], dict[str, list[str]], dict[str, list[str]]]:
    """(source, text) candidates from permissive pages; pages per license kept and skipped."""
    pages = []
    for pkg, p in man_files():
        roff = gzip.open(p).read().decode("utf-8", errors="replace")
        if re.match(r"^\.so\s", roff.lstrip()):
            continue
        lic, ok = man_license(roff)
        pages.append((f"{pkg}/{p.parent.name}/{p.name[:-3]}", roff, lic, ok))
    kept: dict[str, list[str]] = {}
    skipped: dict[str, list[str]] = {}
    for src, _, lic, ok in pages:
        (kept if ok else skipped).setdefault(lic, []).append(src)
    todo = [(src, roff) for src, roff, _, ok in pages if ok]
    with ThreadPoolExecutor(max_workers=8) as ex:
        rendered = list(ex.map(lambda x: render_man(x[1]), todo))
    pool = []
    for (src, _), txt in zip(todo, rendered):
        for para in man_paragraphs(txt):
            t = cut_prose(para)
            if t:
                pool.append((src, t))
    return pool, kept, skipped


# ------------------------------------------------------------------------------------------
# POD
# ------------------------------------------------------------------------------------------

POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&", "apos": "'",
               "nbsp": " ", "copy": "(c)"}
_POD_OPEN = re.compile(r"([BCEFILSXZ])(<+)")


def _pod_code(code: str, inner: str) -> str:
    if code in "XZ":
        return ""
    if code == "E":
        if inner.isdigit():
            return chr(int(inner))
        if inner.startswith("0x"):
            return chr(int(inner, 16))
        if inner not in POD_ESCAPES:
            raise ValueError(f"unknown escape E<{inner}>")
        return POD_ESCAPES[inner]
    if code == "L":
        if "|" in inner:
            return inner.split("|", 1)[0]
        m = re.fullmatch(r'([^/"]*)/"?([^"]*)"?', inner)
        if m:
            name, sec = m.groups()
            return f'"{sec}" in {name}' if name else f'"{sec}"'
    return inner


def _pod_parse(s: str, i: int, end: re.Pattern | None) -> tuple[str, int]:
    buf = []
    while i < len(s):
        if end is not None:
            m = end.match(s, i)
            if m:
                return "".join(buf), m.end()
        m = _POD_OPEN.match(s, i)
        if m:
            n = len(m.group(2))
            j = m.end()
            if n > 1:
                if j >= len(s) or not s[j].isspace():
                    raise ValueError("bad multi-bracket code")
                inner_end = re.compile(r"\s+" + ">" * n)
                j += 1
            else:
                inner_end = re.compile(">")
            inner, i = _pod_parse(s, j, inner_end)
            buf.append(_pod_code(m.group(1), inner.strip() if n > 1 else inner))
            continue
        buf.append(s[i])
        i += 1
    if end is not None:
        raise ValueError("unclosed formatting code")
    return "".join(buf), i


def pod_inline(s: str) -> str | None:
    """Text of a POD paragraph with its formatting codes (C<>, I<>, L<>, E<>, X<> ...) resolved,
    or None when the markup is malformed."""
    try:
        return base.squash(_pod_parse(s, 0, None)[0])
    except ValueError:
        return None


def pod_paragraphs(path: Path) -> list[str]:
    """Ordinary (prose) paragraphs of a POD file: not commands, not verbatim (indented) blocks,
    not inside =begin/=end or =for."""
    out, skip = [], False
    text = path.read_text(encoding="utf-8", errors="replace")
    for para in re.split(r"\n[ \t]*\n", text):
        if not para.strip():
            continue
        if para.startswith("="):
            cmd = para.split(None, 1)[0]
            if cmd == "=begin":
                skip = True
            elif cmd == "=end":
                skip = False
            continue
        if skip or para[0].isspace():
            continue
        t = pod_inline(para)
        if t:
            out.append(t)
    return out


def pod_pool() -> list[tuple[str, str]]:
    pool = []
    for p in sorted(POD_DIR.glob("*.pod")):
        if POD_SKIP.match(p.name):
            continue
        for para in pod_paragraphs(p):
            t = cut_prose(para)
            if t:
                pool.append((f"perl-doc/pod/{p.name}", t))
    return pool


# ------------------------------------------------------------------------------------------
# The Devil's Dictionary
# ------------------------------------------------------------------------------------------

DEVIL_HEAD = re.compile(r"^([A-Z][A-Z0-9' .&-]*?),\s+((?:[a-z]+\.)+(?:\s+(?:and|or)\s+(?:[a-z]+\.)+)?)\s+(\S.*)$",
                        re.S)


def devil_pool() -> list[tuple[str, str]]:
    """'Headword, pos.: definition' for entries whose whole text is one prose paragraph
    (entries with verse or quoted passages, which are indented, are skipped)."""
    pool = []
    for head, entry in base.dict_entries("devil"):
        body = entry.strip("\n")
        if "\n\n" in body or re.search(r"^\s", body, re.M):
            continue
        m = DEVIL_HEAD.match(base.squash(body))
        if not m:
            continue
        word, pos, defn = m.groups()
        defn = re.sub(r"_([^_]+)_", r"\1", defn)  # _italics_
        t = cut_prose(defn)
        if t:
            pool.append((f"dict-devil/{head}", f"{word.capitalize()}, {pos}: {t}"))
    return pool


# ------------------------------------------------------------------------------------------
# code
# ------------------------------------------------------------------------------------------

def _code_ok(seg: str, comment: str) -> bool:
    n_lines = seg.count("\n") + 1
    if not (CODE_LINES[0] <= n_lines <= CODE_LINES[1] and len(seg) <= CODE_MAX_CHARS):
        return False
    if not seg.isascii() or URL_OR_MAIL.search(seg) or "copyright" in seg.lower():
        return False
    body = [ln.strip() for ln in seg.splitlines()[1:-1] if ln.strip()]
    return bool(body) and not all(ln.startswith(comment) for ln in body)


def _balanced(seg: str) -> bool:
    depth = 0
    for i, c in enumerate(seg):
        if c in "{}" and (i == 0 or seg[i - 1] != "\\"):
            depth += 1 if c == "{" else -1
            if depth < 0:
                return False
    return depth == 0


def _blocks(lines: list[str], start: re.Pattern) -> list[tuple[int, str]]:
    """(line number, dedented text) of blocks that open with `start` and close with the first line
    holding only '}' at the opening line's indentation, at most CODE_LINES[1] lines later."""
    out = []
    for i, line in enumerate(lines):
        m = start.match(line)
        if not m:
            continue
        ind = m.group("ind")
        for j in range(i + 1, min(i + CODE_LINES[1], len(lines))):
            ln = lines[j]
            if re.fullmatch(re.escape(ind) + r"\}\s*;?\s*", ln):
                out.append((i + 1, textwrap.dedent("\n".join(lines[i:j + 1])).rstrip()))
                break
            if ln.strip() and not ln.startswith(ind + " ") and not ln.startswith(ind + "\t"):
                break  # dedented past the block: not the shape we want
    return out


def _check_batch(interp: list[str], script: str, snippets: list[str]) -> list[bool]:
    """Run an interpreter once over NUL-separated snippets on stdin; it prints 1 or 0 for each."""
    with tempfile.NamedTemporaryFile("w", suffix=".script", delete=False) as f:
        f.write(script)
    try:
        res = subprocess.run(interp + [f.name], input="\0".join(snippets), capture_output=True, text=True,
                             check=True)
    finally:
        os.unlink(f.name)
    flags = res.stdout.split()
    if len(flags) != len(snippets):
        raise SystemExit(f"{interp[0]} check printed {len(flags)} results for {len(snippets)} snippets")
    return [f == "1" for f in flags]


TCL_CHECK = r"""
fconfigure stdin -translation binary -encoding utf-8
foreach s [split [read stdin] "\0"] {
    set ok [expr {[info complete $s] && [llength $s] == 4 && [lindex $s 0] eq "proc"}]
    puts [expr {$ok ? 1 : 0}]
}
"""

PERL_CHECK = r"""
local $/ = "\0"; my $i = 0;
local $SIG{__WARN__} = sub {};
while (my $s = <STDIN>) {
    chomp $s; $i++;
    my $ok = eval "package FSCheck$i; no strict; no warnings; return 1;\n$s\n;1";
    print(($ok ? 1 : 0), "\n");
}
"""


TCL_PACKAGES = {"tcl8.6": "libtcl8.6", "tk8.6": "libtk8.6"}  # else tcllib
TCLLIB_SKIP = {"comm", "imap4"}  # the two tcllib modules not under the BSD (Tcl) license: OSF, MIT


def tcl_files() -> list[Path]:
    files: set[Path] = set()
    for pat in TCL_LIBS:
        for d in TCL_ROOT.glob(pat):
            files.update(p for p in d.rglob("*") if p.suffix in (".tcl", ".tm") and p.is_file())
    return sorted(f for f in files if f.name not in ("pkgIndex.tcl", "tclIndex")
                  and not (f.relative_to(TCL_ROOT).parts[0].startswith("tcllib")
                           and f.relative_to(TCL_ROOT).parts[1] in TCLLIB_SKIP))


def tcl_pool() -> list[tuple[str, str]]:
    """Whole short `proc name args {...}` definitions; checked with tclsh's `info complete`."""
    start = re.compile(r"^(?P<ind>[ \t]*)proc\s+[\w:.-]+\s+.*\{\s*$")  # literal name, not a template
    cand = []
    for p in tcl_files():
        rel = p.relative_to(TCL_ROOT)
        pkg = TCL_PACKAGES.get(rel.parts[0], "tcllib")
        lines = [ln.expandtabs(8) for ln in p.read_text(encoding="utf-8", errors="replace").splitlines()]
        for _, seg in _blocks(lines, start):
            if _code_ok(seg, "#") and _balanced(seg):
                cand.append((f"{pkg}/{rel.as_posix()}", seg))
    ok = _check_batch(["tclsh"], TCL_CHECK, [s for _, s in cand])
    return [c for c, good in zip(cand, ok) if good]


def perl_files() -> list[Path]:
    return sorted(p for p in PERL_LIB.rglob("*.pm") if p.is_file())


def perl_pool() -> list[tuple[str, str]]:
    """Whole short `sub name {...}` definitions outside POD; each must compile on its own."""
    start = re.compile(r"^(?P<ind>[ \t]*)sub\s+[\w:]+\s*(\([^)]*\)\s*)?\{\s*$")
    cand = []
    for p in perl_files():
        text = p.read_text(encoding="utf-8", errors="replace")
        text = re.split(r"^__(?:END|DATA)__\s*$", text, maxsplit=1, flags=re.M)[0]
        lines, in_pod = [], False
        for ln in text.expandtabs(8).splitlines():
            if re.match(r"^=[a-zA-Z]", ln):
                in_pod = not ln.startswith("=cut")
            # POD lines become "=", which no block can span (it is not indented)
            lines.append("=" if in_pod or ln.startswith("=") else ln)
        for _, seg in _blocks(lines, start):
            if "<<" in seg or not _code_ok(seg, "#") or not _balanced(seg):
                continue
            cand.append((f"perl-modules-5.36/{p.relative_to(PERL_LIB).as_posix()}", seg))
    ok = _check_batch(["perl"], PERL_CHECK, [s for _, s in cand])
    return [c for c, good in zip(cand, ok) if good]


# ------------------------------------------------------------------------------------------
# assembling
# ------------------------------------------------------------------------------------------

def existing_texts(out: Path) -> list[tuple[str, str]]:
    """(file, text) of every text in the task and upstream files already in the output folder
    (this script's own output excluded): text, prompt, response and prompt + response."""
    files = sorted(set(out.glob("task_*.jsonl")) | set(out.glob("upstream*.jsonl")))
    found = []
    for f in files:
        if f.name == OUT_FILE:
            continue
        for line in f.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            for k in ("text", "prompt", "response"):
                if isinstance(row.get(k), str):
                    found.append((f.name, row[k]))
            if isinstance(row.get("prompt"), str) and isinstance(row.get("response"), str):
                found.append((f.name, row["prompt"] + row["response"]))
    return found


class Existing:
    """Fast look-up of overlap with the existing texts, used to skip candidates while picking:
    equality by key, containment through an index of each long key's first MIN_CONTAIN characters
    (ours in theirs through one joined string)."""

    def __init__(self, texts: list[tuple[str, str]]) -> None:
        self.equal: dict[str, str] = {}
        for name, t in texts:
            k = base.key(t)
            if k:
                self.equal.setdefault(k, name)
        self.prefix: dict[str, list[str]] = {}
        for k in self.equal:
            if len(k) >= MIN_CONTAIN:
                self.prefix.setdefault(k[:MIN_CONTAIN], []).append(k)
        self.blob = "|".join(sorted(self.equal))

    def overlaps(self, text: str) -> bool:
        k = base.key(text)
        if k in self.equal or k in self.blob:
            return True
        return any(k.startswith(ek, i) for i in range(len(k) - MIN_CONTAIN + 1)
                   for ek in self.prefix.get(k[i:i + MIN_CONTAIN], ()))


def check_no_overlap(rows: list[dict], existing: list[tuple[str, str]]) -> None:
    """Exit non-zero if a text here equals, contains or is contained in an existing text (by the
    normalised key; containment only for existing texts of MIN_CONTAIN characters or more, since
    one-word answers such as an element symbol occur inside any sentence). Brute force on purpose:
    an independent check of what the Existing index already kept out."""
    keys = {}
    for name, t in existing:
        k = base.key(t)
        if k:
            keys.setdefault(k, name)
    long_keys = [(k, n) for k, n in keys.items() if len(k) >= MIN_CONTAIN]
    bad = []
    for r in rows:
        k = base.key(r["text"])
        if k in keys:
            bad.append((r["id"], keys[k], "equal"))
            continue
        for ek, name in long_keys:
            if ek in k or k in ek:
                bad.append((r["id"], name, "contains" if ek in k else "contained"))
                break
    if bad:
        for b in bad[:20]:
            print("overlap:", *b, file=sys.stderr)
        raise SystemExit(f"{len(bad)} texts overlap the existing demo files")


def targets(n_total: int) -> dict[str, int]:
    n = {k: round(n_total * v) for k, v in SHARES.items()}
    n["manpages"] += n_total - sum(n.values())
    return n


def pick(rng: random.Random, pool: list[tuple[str, str]], n: int, used: base.Used, existing: Existing,
         first=None) -> list[tuple[str, str]]:
    """n (source, text) items in random order, as base.pick does (token window, PER_DOC per
    document, no text used twice), skipping texts that overlap an existing demo text, and taking
    the items for which ``first`` is true before the others: the Tcl core library has too few
    procs for its share, so tcllib only fills up."""
    pool = list(pool)
    rng.shuffle(pool)
    if first is not None:
        pool.sort(key=lambda x: not first(x))  # stable: random order within each group
    out, counts = [], Counter()
    for src, text in pool:
        if len(out) == n:
            break
        if counts[src] >= PER_DOC or not (TOKENS[0] <= base.ntokens(text) <= TOKENS[1]):
            continue
        if existing.overlaps(text):
            continue
        if used.take(text):
            out.append((src, text))
            counts[src] += 1
    if len(out) < n:
        raise SystemExit(f"only {len(out)} of {n} items available")
    return out


def build(seed: int, out: Path, n_total: int) -> None:
    rng = random.Random(seed)
    used = base.Used()
    existing = existing_texts(out)
    index = Existing(existing)

    man, man_kept, man_skipped = man_pool()
    pools = {"manpages": man, "perl_doc": pod_pool(), "devils_dictionary": devil_pool(),
             "tcl_code": tcl_pool(), "perl_code": perl_pool()}
    want = targets(n_total)
    rows: list[tuple[str, str, str]] = []
    for cat, pool in pools.items():
        first = (lambda x: not x[0].startswith("tcllib/")) if cat == "tcl_code" else None
        sel = pick(rng, pool, want[cat], used, index, first)
        rows += [(cat, s, t) for s, t in sel]
    rng.shuffle(rows)
    data = [{"id": f"uh-{i:04d}", "text": t, "source": s, "category": c} for i, (c, s, t) in enumerate(rows)]
    check_no_overlap(data, existing)

    out.mkdir(parents=True, exist_ok=True)
    base.write_jsonl(out / OUT_FILE, data)
    used_pages: dict[str, set[str]] = {}
    page_lic = {src: lic for lic, srcs in man_kept.items() for src in srcs}
    for r in data:
        if r["category"] == "manpages":
            used_pages.setdefault(page_lic[r["source"]], set()).add(r["source"])
    write_sources(out / SOURCES_FILE, data, seed, pools, man_kept, man_skipped, used_pages)
    counts = Counter(r["category"] for r in data)
    print(f"wrote {len(data)} examples to {out / OUT_FILE}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


def write_sources(path: Path, data: list[dict], seed: int, pools: dict, man_kept: dict, man_skipped: dict,
                  used_pages: dict[str, set[str]]) -> None:
    pkgs = ["manpages", "manpages-dev", "groff-base", "perl-doc", "perl-modules-5.36", "dict-devil",
            "libtcl8.6", "libtk8.6", "tcllib", "tcl8.6"]
    counts = Counter(r["category"] for r in data)
    docs = {c: len({r["source"] for r in data if r["category"] == c}) for c in counts}
    pool_docs = {c: len({s for s, _ in p}) for c, p in pools.items()}
    descr = {
        "manpages": "paragraphs of the DESCRIPTION and NOTES sections of Linux man pages (manpages, "
                    "manpages-dev), rendered with groff; permissive pages only (see below)",
        "perl_doc": "prose paragraphs of the Perl documentation (perl-doc, /usr/share/perl/5.36/pod/*.pod), "
                    "POD formatting codes resolved",
        "devils_dictionary": "entries of Ambrose Bierce's The Devil's Dictionary (dict-devil) as "
                             "'Headword, pos.: definition', verse entries skipped",
        "tcl_code": "whole short procs of the Tcl 8.6 and Tk 8.6 script libraries and of tcllib",
        "perl_code": "whole short subs of the Perl 5.36 core modules (perl-modules-5.36)",
    }
    L = [
        "# upstream_human.jsonl: sources, licenses and how it was made",
        "",
        f"Written by `scripts/build_upstream_text.py --seed {seed}` (do not edit by hand; rerun the script).",
        "Human-written plain text of the kinds small language models are pretrained on: technical",
        "reference prose (man pages), tutorial and reference prose (Perl documentation), old",
        "public-domain English (The Devil's Dictionary) and source code (Tcl, Perl). Nothing generated.",
        f"Every text is {TOKENS[0]}-{TOKENS[1]} tokens, counted with the {base.TOKENIZER_NAME};",
        f"code has {CODE_LINES[0]}-{CODE_LINES[1]} lines and at most {CODE_MAX_CHARS} characters. At most "
        f"{PER_DOC} examples come from one man page, POD file or source file.",
        "No text equals, contains or is contained in a text of the task_*.jsonl or other upstream*.jsonl",
        "files of this folder (a normalised-content check in the build script), and none comes from the",
        "sources of the fine-tuning tasks (fortunes, KJV, WordNet, Jargon File, dict-elements,",
        "python3.11-doc, CPython). The texts keep the licenses of their sources listed below.",
        "",
        f"Built with Python {sys.version.split()[0]} on Debian; package versions:",
        "",
    ]
    L += [f"- `{p}` {base.pkg_version(p)}" for p in pkgs]
    L += ["", "## Categories", "", "| category | examples | documents used | documents with candidates | "
          "source |", "|---|---|---|---|---|"]
    for c in SHARES:
        L.append(f"| `{c}` | {counts.get(c, 0)} | {docs.get(c, 0)} | {pool_docs.get(c, 0)} | {descr[c]} |")
    L += [f"| total | {len(data)} | | | |", "", "## Licenses", ""]
    L += [
        "- Man pages: the Debian copyright file of man-pages (`/usr/share/doc/manpages/copyright`) gives",
        "  licenses per page, and each page states its own in its roff source: an `SPDX-License-Identifier`",
        "  line, or in older pages a `%%%LICENSE_START(...)` comment. A page is used only when that license",
        "  is permissive: `Linux-man-pages-copyleft` (SPDX's name for the traditional Linux man-pages",
        "  \"verbatim\" license: copies and modified copies may be distributed if the permission notice is",
        "  kept), BSD variants or MIT, declared on an SPDX line. GPL pages (and LDPv1, MISC or pages",
        "  stating none) are not used. Pages with only an old `%%%LICENSE_START` marker are not used",
        "  either, whatever the marker says: Debian's copyright file does not list them one by one, and its",
        "  catch-all `Files: *` stanza says GPL-2+, so their terms are in doubt.",
        "  Pages (not `.so` links) per license:",
        "",
        "  | license (from the page) | pages | used | pages used |",
        "  |---|---|---|---|",
    ]
    for lic in sorted(man_kept, key=lambda x: (-len(man_kept[x]), x)):
        pages = sorted(used_pages.get(lic, set()))
        names = ", ".join(p.split("/", 2)[2] for p in pages)
        L.append(f"  | {lic} (kept) | {len(man_kept[lic])} | {len(pages)} | {names} |")
    for lic in sorted(man_skipped, key=lambda x: (-len(man_skipped[x]), x)):
        L.append(f"  | {lic} (not used) | {len(man_skipped[lic])} | 0 | |")
    L += [
        "",
        "- Perl documentation (perl-doc) and core modules (perl-modules-5.36): \"same terms as Perl",
        "  itself\", i.e. GPL-1+ or Artistic-1.0 (`/usr/share/doc/perl-doc/copyright`); shipped here under",
        "  the Artistic License terms. The few exceptions in the copyright files are also under",
        "  permissive or Artistic terms (Getopt::Long and Tie::File: GPL-2+ or Artistic; Text::Tabs/Wrap:",
        "  their own permissive notice; ok.pm: CC0; perlpodstyle.pod: Russ Allbery's all-permissive",
        "  notice, copying with or without changes allowed if the notice is kept). perlgpl.pod and",
        "  perlartistic.pod (the license",
        "  texts themselves) are not used.",
        "- Tcl/Tk libraries (libtcl8.6, libtk8.6) and tcllib: the BSD-style Tcl license",
        "  (`/usr/share/doc/libtcl8.6/copyright`, `/usr/share/doc/tcllib/copyright`); the tcllib modules",
        "  `comm` (OSF) and `imap4` (MIT) are left out so all Tcl code is under the one license.",
        "- The Devil's Dictionary (dict-devil): public domain (Ambrose Bierce, 1911; copyright expired,",
        "  `/usr/share/doc/dict-devil/copyright`).",
        "",
        "## Method",
        "",
        "- Man pages: the real pages (no links, no `.so` stubs) listed by `dpkg-query -L manpages",
        "  manpages-dev` under `/usr/share/man/man[1-8]`, rendered with `groff -k -t -man -Tutf8 -P-c -P-b",
        "  -P-u -rLL=6000n -rHY=0` (no hyphenation, no bold/underline, one output line per paragraph).",
        "  Paragraphs at the top indent of the DESCRIPTION and NOTES sections (subsections included);",
        "  tagged lists, tables and code blocks, which have other indents, are left out.",
        "- Perl docs: ordinary paragraphs of `/usr/share/perl/5.36/pod/*.pod` (not commands, verbatim",
        "  blocks or `=begin`/`=end` regions) with the formatting codes resolved (`C<...>`, `I<...>`, `L<...>`",
        "  as its text, `E<...>` escapes; `X<>`/`Z<>` dropped). Release notes (`perl*delta`), license texts,",
        "  the table of contents, the history and property tables and the translated READMEs are skipped.",
        "- Prose (both, and the dictionary): the shortest run of whole leading sentences (`first_sentences`)",
        "  that has the token length above, is mostly letters, starts with a capital, ends with `.`, `!` or",
        "  `?` (not an abbreviation), and has no URL, e-mail address or leftover markup.",
        "- The Devil's Dictionary: dictd database read directly; entries whose text is one unindented",
        "  paragraph (entries with verse or quotations are skipped), `_italics_` marks removed, written as",
        "  `Headword, pos.: definition`.",
        "- Tcl: `proc name args {` ... `}` blocks (closing brace alone at the opening indent) in `*.tcl` and",
        "  `*.tm`, tabs expanded to 8, literal proc names; braces balanced, and `info complete` in tclsh",
        "  with 4 words. The Tcl and Tk libraries have too few short procs for the share, so all of theirs",
        "  that fit are taken first and tcllib fills up the rest.",
        "- Perl: `sub name {` ... `}` blocks outside POD and before `__END__`; no here-documents; each",
        "  compiles on its own (`perl`, compile only, in a package of its own). Code blocks that are",
        "  comments only are dropped.",
        "- Texts deduplicated by normalised content; each category drawn at random (seed above) from its",
        "  candidates, at most 3 per document, then all rows shuffled.",
        "",
    ]
    path.write_text("\n".join(L), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n", type=int, default=N_TOTAL, help="number of examples (shares: see SHARES)")
    args = ap.parse_args(argv)
    base.load_tokenizer()
    build(args.seed, args.out, args.n)


if __name__ == "__main__":
    main()
