#!/usr/bin/env python3
"""Build forgetscope's instruction-format demo tasks: FLAN-style prompt templates over offline facts.

Run by hand (not by CI; CI uses the shipped files), on Debian 12 with these packages installed:

    apt-get install -y iso-codes miscfiles wamerican wbritish tzdata python3.11-doc
    python scripts/build_instruction_tasks.py        # --seed 0 --out src/forgetscope/data/demo

Why: the tasks written by build_demo_data.py are mostly plain text. A study of what fine-tuning makes a
model forget also needs many small prompt -> response tasks of different kinds (short answers, labels,
rewrites, extraction, code reading, multi-sentence answers). Like FLAN, each task turns one source into
examples through 3-5 paraphrased templates, one drawn per item with the seeded RNG.

Sources read (nothing downloaded):
  * Python's own tables: unicodedata, html.entities, mimetypes (built-in map only), errno/os.strerror,
    calendar arithmetic, zoneinfo over the system tzdata (/usr/share/zoneinfo)
  * /usr/share/dict/american-english, british-english       (wamerican, wbritish: SCOWL word lists)
  * /usr/share/iso-codes/json/*.json and the iso-codes gettext catalogues in /usr/share/locale
  * /usr/share/misc/{countries,airport,inter.phone}.gz      (miscfiles: facts only)
  * /usr/share/doc/python3.11/html/_sources/faq/*.rst.txt   (python3.11-doc: the Python FAQ)
  * templates filled by this script (the tasks marked synthetic)

Writes task_<name>.jsonl, tasks_instruction.yaml and SOURCES_instruction.md next to the existing demo
files and leaves those alone. No prompt+response text repeats within or across the new tasks or equals a
text of the existing task_*.jsonl / upstream*.jsonl files: the script checks and exits non-zero otherwise.
Byte-identical output for the same seed and package versions (every listing is sorted, every RNG seeded).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import datetime as dt
import errno
import functools
import gettext
import gzip
import html.entities
import io
import json
import math
import mimetypes
import os
import random
import re
import sys
import unicodedata
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_demo_data as base  # noqa: E402

DEFAULT_OUT = base.DEFAULT_OUT
N_TRAIN, N_HELDOUT = base.N_TRAIN, base.N_HELDOUT
MIN_TRAIN, MIN_HELDOUT = 100, 20   # for sources that cannot give 180 distinct items
TOKENS = (4, 64)        # prompt + response, SmolLM2 tokens, no BOS
LONG_TOKENS = (24, 96)  # long_answer tasks

ISO_JSON = Path("/usr/share/iso-codes/json")
LOCALE_DIR = Path("/usr/share/locale")
MISC_DIR = Path("/usr/share/misc")
DICT_DIR = Path("/usr/share/dict")
ZONE_DIR = Path("/usr/share/zoneinfo")
FAQ_DIR = Path("/usr/share/doc/python3.11/html/_sources/faq")
PACKAGES = ["iso-codes", "miscfiles", "wamerican", "wbritish", "tzdata", "python3.11-doc", "libc6"]
CATEGORIES = ("short_answer", "classification", "transformation", "extraction", "code_reading", "long_answer")
MIN_PER_CATEGORY = {"short_answer": 6, "classification": 4, "transformation": 6, "extraction": 3,
                    "code_reading": 3, "long_answer": 3}
MIN_TASKS = 26
INDEX_NAME = "tasks_instruction.yaml"
SOURCES_NAME = "SOURCES_instruction.md"

MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
LANG_NAMES = {"de": "German", "es": "Spanish", "fr": "French"}

# Small hand-written fillers for the generated tasks (names are generic, not from any source).
FIRST_NAMES = ["Ada", "Bruno", "Chloe", "Dmitri", "Elena", "Femi", "Greta", "Hassan", "Ingrid", "Jonas",
               "Keiko", "Luis", "Mira", "Nils", "Olga", "Pavel", "Quinn", "Rosa", "Sven", "Tara", "Umar",
               "Vera", "Wanda", "Xavier", "Yusuf", "Zoe"]
LAST_NAMES = ["Alder", "Brook", "Castell", "Dunmore", "Eklund", "Farrow", "Garner", "Holt", "Ibarra",
              "Jansen", "Kowal", "Lindqvist", "Moreau", "Novak", "Okafor", "Petrov", "Quist", "Rahman",
              "Silva", "Thorne", "Ueda", "Varga", "Weller", "Yilmaz", "Zeller"]
TOWNS = ["Aldport", "Brightwater", "Cedar Falls", "Dunhill", "Eastmoor", "Fernvale", "Glenrock",
         "Harbor City", "Ironbridge", "Juniper Bay", "Kingsford", "Lakeside", "Millbrook", "Northgate"]
COLOURS = ["red", "blue", "green", "black", "white", "yellow", "orange", "purple", "grey", "teal"]
TLDS = ["com", "org", "net", "io", "dev", "info", "edu", "de", "fr", "nl", "se", "co.uk", "com.au"]
SUBDOMAINS = ["www", "shop", "docs", "mail", "api", "blog", "news", "app"]
# Words that a random pick from the word list must never put into a prompt.
BLOCKLIST = set("""
ass asses bastard bitch bitches bollocks boner boob boobs butt cock cocks coon crap cum cunt cunts damn
dick dicks dildo dyke fag fags faggot fart fuck fucks homo hooker jap jew kike negro nigger nazi nazis
penis piss porn prick pussy rape raped rapes rapist retard screw scum sex sexy shit shits slut sluts smut
spic tit tits turd twat vagina wank whore whores kill killer murder suicide drug drugs gun guns
raping wanton wantons
""".split())
BLOCKED_PARTS = ("fuck", "shit", "cunt", "nigg", "fag", "dyke", "dyking", "whore", "slut", "swastika", "nazi",
                 "rapist", "porn", "penis", "vagin", "bitch", "bastard", "pooh", "wank", "queer", "homo",
                 "lesbian", "jew", "gay", "sex", "negro", "spastic", "retard", "hitler", "pimp", "turd")


def clean_word(w: str) -> bool:
    return w not in BLOCKLIST and not any(b in w for b in BLOCKED_PARTS)


# ------------------------------------------------------------------------------------------
# items, tasks and the registry of builders
# ------------------------------------------------------------------------------------------

@dataclass
class Item:
    """One underlying item (a country, a number, a word family): it yields one row and never appears on
    both sides of the train/held-out split."""
    key: str
    fields: dict
    response: str
    answer: str | None
    source: str
    label: str = ""
    claims: tuple[str, ...] = ()  # things no other task may also use (a number, a date, a character)


@dataclass
class Task:
    name: str
    category: str
    templates: list[str]
    items: list[Item]
    description: str
    source: str
    license: str
    method: str
    synthetic: bool = False
    derived: bool = False
    balanced: bool = False  # equal numbers of rows per label
    grouped: bool = False   # several rows may share a key (the split keeps a key on one side)


BUILDERS: list = []


def builder(fn):
    BUILDERS.append(fn)
    return fn


# ------------------------------------------------------------------------------------------
# source readers (cached: several tasks read the same tables)
# ------------------------------------------------------------------------------------------

def misc_rows(name: str, nfields: int) -> list[list[str]]:
    """Colon-separated records of a miscfiles table, comments and blank lines dropped."""
    with gzip.open(MISC_DIR / f"{name}.gz", "rt", encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f]
    return [ln.split(":", nfields - 1) for ln in lines if ln.strip() and not ln.startswith("#")]


@functools.cache
def iso_table(name: str) -> tuple[dict, ...]:
    data = json.loads((ISO_JSON / f"iso_{name}.json").read_text(encoding="utf-8"))
    return tuple(data[name])


@functools.cache
def catalogue(domain: str, lang: str) -> gettext.GNUTranslations:
    return gettext.translation(domain, str(LOCALE_DIR), languages=[lang])


def translate(domain: str, lang: str, text: str) -> str | None:
    """The catalogue's translation of ``text``, or None where it has none or it differs only in case
    (French 'oriya' for 'Oriya' is no translation task)."""
    t = catalogue(domain, lang).gettext(text)
    return t if t.casefold() != text.casefold() else None


@functools.cache
def country_names() -> dict[str, str]:
    """alpha-2 code -> the everyday English name (iso-codes common_name where it has one)."""
    return {c["alpha_2"]: c.get("common_name", c["name"]) for c in iso_table("3166-1")}


def read_words(path: Path) -> set[str]:
    return set(path.read_text(encoding="utf-8").split())


@functools.cache
def common_words() -> tuple[str, ...]:
    """Lowercase 3-8 letter words spelt the same in the American and British lists."""
    both = read_words(DICT_DIR / "american-english") & read_words(DICT_DIR / "british-english")
    return tuple(sorted(w for w in both if re.fullmatch(r"[a-z]{3,8}", w) and clean_word(w)))


# (regex on the US word, replacement): -iz-/-is-, -or/-our, -er/-re, -og/-ogue, -ense/-ence, e/ae, oe, l/ll
SPELLING_RULES = [("iz", "is"), ("yz", "ys"), ("or", "our"), ("er", "re"), ("og", "ogue"), ("ense", "ence"),
                  ("e", "ae"), ("^e", "oe"), ("^fet", "foet"), ("rrhe", "rrhoe"), ("ameb", "amoeb"),
                  ("l", "ll"), ("ll", "l"), ("o", "ou"), ("ay", "ey"), ("ow", "ough"), ("um", "ium"),
                  ("dgment", "dgement"), ("ging", "geing"), ("am", "amme"), ("ck", "que")]


@functools.cache
def spelling_families() -> tuple[tuple[str, tuple[tuple[str, str], ...]], ...]:
    """(stem, ((us, uk), ...)) for word pairs that differ in spelling: the US form is only in
    american-english, the UK form only in british-english, and exactly one UK-only word is reachable
    from the US word by one of the usual rewrites (-ize/-ise, -or/-our, -er/-re, ...). Words sharing the
    US spelling up to the end of the difference (color, colors, colored) form one family, the unit of the
    train/held-out split."""
    us, uk = read_words(DICT_DIR / "american-english"), read_words(DICT_DIR / "british-english")
    only_us = sorted(w for w in us - uk if re.fullmatch(r"[a-z]{4,14}", w) and clean_word(w))
    only_uk = {w for w in uk - us if re.fullmatch(r"[a-z]{4,15}", w)}
    fams: dict[str, list[tuple[str, str]]] = {}
    for w in only_us:
        cands = {w[:m.start()] + b + w[m.end():] for a, b in SPELLING_RULES for m in re.finditer(a, w)}
        hits = sorted(cands & only_uk)
        if len(hits) != 1:
            continue
        v = hits[0]
        j = 0
        while j < min(len(w), len(v)) - 1 and w[-1 - j] == v[-1 - j]:
            j += 1
        fams.setdefault(w[:len(w) - j], []).append((w, v))
    return tuple((stem, tuple(sorted(pairs))) for stem, pairs in sorted(fams.items()))


@functools.cache
def region_zones() -> tuple[str, ...]:
    """Time zone names under the continental folders of the system tzdata (files, not a Python list)."""
    out = []
    for region in ("Africa", "America", "Asia", "Australia", "Europe", "Pacific"):
        for p in sorted((ZONE_DIR / region).rglob("*")):
            if p.is_file():
                out.append(p.relative_to(ZONE_DIR).as_posix())
    return tuple(sorted(out))


def zone_city(zone: str) -> str:
    return zone.rsplit("/", 1)[-1].replace("_", " ")


# ------------------------------------------------------------------------------------------
# small formatters used by several generated tasks
# ------------------------------------------------------------------------------------------

_ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
         "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def number_words(n: int) -> str:
    """American style, no 'and': 4372 -> 'four thousand three hundred seventy-two'."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + (f"-{_ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{_ONES[n // 100]} hundred" + (f" {number_words(n % 100)}" if n % 100 else "")
    return f"{number_words(n // 1000)} thousand" + (f" {number_words(n % 1000)}" if n % 1000 else "")


def roman(n: int) -> str:
    out = []
    for v, s in [(1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
                 (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")]:
        while n >= v:
            out.append(s)
            n -= v
    return "".join(out)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def is_leap(y: int) -> bool:
    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)


def factorise(n: int) -> list[int]:
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    return out + ([n] if n > 1 else [])


def dec(x: Decimal) -> str:
    """A Decimal without exponent or trailing zeros: 30.480 -> '30.48', 2E+3 -> '2000'."""
    s = format(x.normalize(), "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def long_date(d: dt.date) -> str:
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def random_date(rng: random.Random, lo: int = 1900, hi: int = 2100) -> dt.date:
    start, end = dt.date(lo, 1, 1).toordinal(), dt.date(hi, 12, 31).toordinal()
    return dt.date.fromordinal(rng.randint(start, end))


def date_phrases(d: dt.date) -> list[str]:
    m = MONTHS[d.month - 1]
    return [f"{m} {d.day}, {d.year}", f"{d.day} {m} {d.year}", f"the {ordinal(d.day)} of {m} {d.year}",
            f"{m[:3]}. {d.day}, {d.year}" if len(m) > 4 else f"{m} {d.day}, {d.year}"]


def person(rng: random.Random) -> tuple[str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)


# ------------------------------------------------------------------------------------------
# short_answer
# ------------------------------------------------------------------------------------------

@builder
def capital_cities(rng: random.Random) -> Task:
    items = []
    for _num, a2, _a3, name, cap in misc_rows("countries", 5):
        cap = cap.strip()
        if not cap or any(c in cap + name for c in "(),"):
            continue  # no capital listed, or several (official / administrative) capitals
        items.append(Item(a2, {"country": name}, cap, cap, f"miscfiles/countries/{a2}"))
    return Task(
        "capital_cities", "short_answer",
        ["What is the capital of {country}?", "Which city is the capital of {country}?",
         "Name the capital city of {country}.", "{country}: what is its capital city?"],
        items,
        "Short answer: the capital city of a country or territory (exact match).",
        "miscfiles /usr/share/misc/countries.gz (country name and capital columns)",
        "facts from miscfiles (GPL-2+ package); only the names are used",
        "countries with exactly one listed capital; the table is dated (e.g. it says Swaziland)")


@builder
def airport_codes(rng: random.Random) -> Task:
    rows = misc_rows("airport", 5)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[1]] = counts.get(r[1], 0) + 1
    items = []
    for code, name, cc, _sub, _cities in rows:
        country = country_names().get(cc)
        if not country or "," in country or counts[name] > 1 or not re.fullmatch(r"[A-Z]{3}", code):
            continue
        ap = name if re.search(r"\bAirport\b", name) else f"{name} airport"
        items.append(Item(code, {"airport": ap, "country": country}, code, code, f"miscfiles/airport/{code}"))
    return Task(
        "airport_codes", "short_answer",
        ["What is the IATA code of {airport} in {country}?",
         "Give the three-letter IATA code for {airport} ({country}).",
         "Which IATA airport code belongs to {airport}, {country}?",
         "{airport}, {country}: what is its IATA code?"],
        items,
        "Short answer: the three-letter IATA code of an airport, given its name and country.",
        "miscfiles /usr/share/misc/airport.gz; country names from iso-codes ISO 3166-1",
        "facts from miscfiles (GPL-2+ package) and iso-codes (LGPL-2.1+); only names and codes are used",
        "airports whose name occurs once; the country code is spelt out with its ISO 3166-1 name")


@builder
def dialling_codes(rng: random.Random) -> Task:
    items = []
    for code, country in misc_rows("inter.phone", 2):
        code, country = code.strip(), country.strip()
        if not re.fullmatch(r"\d{1,4}", code) or "," in country or country == "North America":
            continue
        items.append(Item(base.key(country), {"country": country}, f"+{code}", f"+{code}",
                          f"miscfiles/inter.phone/{code}"))
    return Task(
        "dialling_codes", "short_answer",
        ["What is the international dialling code of {country}?",
         "Which country calling code is used for phone numbers in {country}?",
         "To phone {country} from abroad, which country code do you dial?",
         "Give the telephone country code of {country}."],
        items,
        "Short answer: the international telephone country code of a country (e.g. +44).",
        "miscfiles /usr/share/misc/inter.phone.gz",
        "facts from miscfiles (GPL-2+ package); only names and numbers are used",
        "one row per country; lines naming several countries and the North America zone skipped; dated")


@builder
def currency_codes(rng: random.Random) -> Task:
    table = iso_table("4217")
    counts: dict[str, int] = {}
    for c in table:
        counts[c["name"]] = counts.get(c["name"], 0) + 1
    skip = re.compile(r"Fund|Unit|Code|universal|transactions|Mvdol|WIR|Unidad|Unidades|Bond|Drawing|"
                      r"Gold|Silver|Platinum|Palladium|\(")
    items = [Item(c["alpha_3"], {"currency": c["name"]}, c["alpha_3"], c["alpha_3"],
                  f"iso-codes/iso_4217/{c['alpha_3']}")
             for c in table if counts[c["name"]] == 1 and not skip.search(c["name"])]
    return Task(
        "currency_codes", "short_answer",
        ["What is the ISO 4217 code of the currency called {currency}?",
         "Which three-letter ISO 4217 code stands for the {currency}?",
         "Give the ISO currency code for: {currency}.",
         "Currency name: {currency}. What is its ISO 4217 code?"],
        items,
        "Short answer: the ISO 4217 three-letter code of a currency, given its name.",
        "iso-codes /usr/share/iso-codes/json/iso_4217.json", "LGPL-2.1+ (iso-codes); facts only",
        "currencies whose name is unique; funds, metals, bond units and test codes skipped")


def unicode_name_pool() -> list[int]:
    ranges = [(0xC0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x531, 0x587), (0x5D0, 0x5EA),
              (0x20A0, 0x20C0), (0x2190, 0x21FF), (0x2200, 0x22FF), (0x2600, 0x26FF)]
    out = []
    for lo, hi in ranges:
        for cp in range(lo, hi + 1):
            ch = chr(cp)
            if unicodedata.name(ch, "") and unicodedata.category(ch)[0] in "LSN":
                out.append(cp)
    return out


@builder
def html_entities(rng: random.Random) -> Task:
    by_char: dict[str, str] = {}
    for name in sorted(html.entities.html5):
        ch = html.entities.html5[name]
        if (name.endswith(";") and len(ch) == 1 and ch.isalpha() and ord(ch) <= 0xFFFF and ord(ch) > 0x7F
                and len(name) <= 11 and ch not in by_char):
            by_char[ch] = name[:-1]
    items = [Item(f"U+{ord(ch):04X}", {"entity": f"&{nm};"}, ch, ch, f"html5-entities/{nm}",
                  claims=(f"char:{ch}",)) for ch, nm in sorted(by_char.items())]
    return Task(
        "html_entities", "short_answer",
        ["Which character does the HTML entity {entity} produce?",
         "What character is written in HTML as {entity}?",
         "Decode the HTML character reference {entity}",
         "In HTML, {entity} stands for which character?"],
        items,
        "Short answer: the (non-ASCII letter) character an HTML5 named character reference stands for.",
        "Python html.entities.html5 (the WHATWG HTML5 named character references)",
        "PSF-2.0 (Python); facts only",
        "entities for single non-ASCII letters of the Basic Multilingual Plane, one entity per character")


@builder
def unicode_names(rng: random.Random) -> Task:
    items = []
    for cp in unicode_name_pool():
        ch = chr(cp)
        nm = unicodedata.name(ch)
        items.append(Item(f"U+{cp:04X}", {"ch": ch, "cp": f"{cp:04X}"}, nm, nm, f"unicodedata/U+{cp:04X}",
                          claims=(f"char:{ch}",)))
    return Task(
        "unicode_names", "short_answer",
        ["What is the Unicode name of the character {ch}?",
         "Give the official Unicode name of U+{cp} ({ch}).",
         "Which Unicode character name belongs to {ch}?",
         "Name this Unicode character: {ch}"],
        items,
        "Short answer: the official Unicode name of a letter or symbol (Latin, Greek, Cyrillic, Armenian, "
        "Hebrew, arrows, maths, currency and miscellaneous symbols).",
        f"Python unicodedata (Unicode {unicodedata.unidata_version})",
        "Unicode Character Database (Unicode license, permissive); facts only",
        "letters, numbers and symbols from nine blocks; no character also used by another task")


@builder
def mime_types(rng: random.Random) -> Task:
    m = mimetypes.MimeTypes(filenames=())  # only Python's built-in table, not /etc/mime.types
    table = {**m.types_map[False], **m.types_map[True]}
    items = [Item(typ, {"ext": ext}, typ, typ, f"python-mimetypes/{ext}")
             for ext, typ in sorted(table.items())]
    return Task(
        "mime_types", "short_answer",
        ["What is the MIME type of a file with the extension {ext}?",
         "Which media type (MIME type) is usually used for {ext} files?",
         "Give the Content-Type for a {ext} file.",
         "A file name ends in {ext}. What is its MIME type?"],
        items,
        "Short answer: the MIME (media) type for a file extension.",
        "Python mimetypes built-in tables (MimeTypes(filenames=()), strict and non-strict)",
        "PSF-2.0 (Python); facts only",
        "one row per extension; extensions of the same MIME type are kept on one side of the split",
        grouped=True)


@builder
def errno_messages(rng: random.Random) -> Task:
    items = [Item(name, {"name": name}, os.strerror(num), os.strerror(num), f"errno/{name}")
             for num, name in sorted(errno.errorcode.items())]
    return Task(
        "errno_messages", "short_answer",
        ["What does the error code {name} mean?",
         "What is the standard error message for {name} on Linux?",
         "Explain the errno value {name} in a few words.",
         "A system call failed with {name}. What does that mean?"],
        items,
        "Short answer: the C library's message for an errno name (ENOENT -> No such file or directory).",
        "Python errno.errorcode and os.strerror (messages of the GNU C library)",
        "PSF-2.0 (Python) / LGPL-2.1+ (glibc messages); short facts",
        "every errno name Python knows on Linux (fewer than 180, so 20 are held out)")


@builder
def weekday(rng: random.Random) -> Task:
    items = []
    for _ in range(600):
        d = random_date(rng)
        items.append(Item(d.isoformat(), {"date": rng.choice(date_phrases(d)[:2])}, WEEKDAYS[d.weekday()],
                          WEEKDAYS[d.weekday()], f"generated/calendar/{d.isoformat()}",
                          claims=(f"date:{d.isoformat()}",)))
    return Task(
        "weekday", "short_answer",
        ["On which day of the week does {date} fall?", "Which weekday is {date}?",
         "{date}: what day of the week is it?", "Name the day of the week for the date {date}."],
        _unique(items),
        "SYNTHETIC: the day of the week of a random Gregorian date between 1900 and 2100.",
        "generated by scripts/build_instruction_tasks.py (Python datetime)", "Apache-2.0 (generated)",
        "random dates 1900-2100 written as 'March 3, 1987' or '3 March 1987'; answer from datetime",
        synthetic=True)


@builder
def utc_offsets(rng: random.Random) -> Task:
    zones = sorted(ln.split("\t")[2] for ln in (ZONE_DIR / "zone1970.tab").read_text(encoding="utf-8")
                   .splitlines() if ln and not ln.startswith("#"))
    items = []
    for z in zones:
        if z.startswith(("Antarctica/", "Etc/")):
            continue
        day = dt.date(2024, rng.choice([1, 7]), 15)
        off = zoneinfo.ZoneInfo(z).utcoffset(dt.datetime(day.year, day.month, day.day, 12))
        mins = int(off.total_seconds() // 60)
        sign, mins = ("+" if mins >= 0 else "-"), abs(mins)
        hhmm = f"{sign}{mins // 60:02d}:{mins % 60:02d}"
        items.append(Item(z, {"zone": z, "date": long_date(day)}, f"UTC{hhmm}", hhmm,
                          f"tzdata/{z}/{day.isoformat()}", claims=(f"city:{base.key(zone_city(z))}",)))
    return Task(
        "utc_offsets", "short_answer",
        ["What is the UTC offset of the time zone {zone} on {date}?",
         "On {date}, how far is local time in {zone} from UTC?",
         "Give the offset from UTC of {zone} time on {date}.",
         "Time zone {zone}, date {date}: what is the UTC offset?"],
        items,
        "Short answer: the UTC offset (with daylight saving time where it applies) of an IANA time zone "
        "at noon on 15 January or 15 July 2024.",
        "tzdata (/usr/share/zoneinfo/zone1970.tab and the compiled zones, read with Python zoneinfo)",
        "public domain (tz database)",
        "canonical zones of zone1970.tab (no Antarctica); city names not used by tz_continent")


# ------------------------------------------------------------------------------------------
# classification
# ------------------------------------------------------------------------------------------

@builder
def tz_continent(rng: random.Random) -> Task:
    label_of = {"Africa": "Africa", "America": "Americas", "Asia": "Asia", "Europe": "Europe",
                "Australia": "Oceania", "Pacific": "Oceania"}
    seen: set[str] = set()
    items = []
    for z in region_zones():
        city = zone_city(z)
        k = base.key(city)
        if k in seen or re.search(r"[a-z][A-Z]|\d", city) or len(city) < 3:
            continue
        seen.add(k)
        lab = label_of[z.split("/", 1)[0]]
        items.append(Item(z, {"city": city}, lab, lab, f"tzdata/{z}", label=lab, claims=(f"city:{k}",)))
    return Task(
        "tz_continent", "classification",
        ["On which continent is {city}? Answer Africa, Americas, Asia, Europe or Oceania.",
         "Which continent is {city} on: Africa, Americas, Asia, Europe or Oceania?",
         "Classify the place {city} by continent (Africa, Americas, Asia, Europe, Oceania).",
         "Place: {city}\nContinent (Africa, Americas, Asia, Europe or Oceania)?"],
        items,
        "Derived classification: the continent of a place that names an IANA time zone (label from the "
        "zone's region folder; Australia and Pacific are Oceania).",
        "tzdata (zone file names under /usr/share/zoneinfo/{Africa,America,Asia,Australia,Europe,Pacific})",
        "public domain (tz database)",
        "one row per city name (links included); five balanced classes; cities of utc_offsets excluded",
        derived=True, balanced=True)


@builder
def prime_check(rng: random.Random) -> Task:
    items = []
    for _ in range(2000):
        n = rng.randrange(101, 10000, 2)
        if n % 5 == 0:
            continue
        lab = "Yes" if is_prime(n) else "No"
        items.append(Item(str(n), {"n": str(n)}, lab, lab, "generated/prime", label=lab,
                          claims=(f"number:{n}",)))
    return Task(
        "prime_check", "classification",
        ["Is {n} a prime number? Answer yes or no.", "Answer yes or no: is {n} prime?",
         "Is the number {n} prime?", "Yes or no: {n} has no divisors other than 1 and itself."],
        _unique(items),
        "SYNTHETIC: is an odd number between 101 and 9999 (not ending in 5) prime? Balanced yes/no.",
        "generated by scripts/build_instruction_tasks.py (trial division)", "Apache-2.0 (generated)",
        "odd numbers not divisible by 5, so neither answer can be read off the last digit",
        synthetic=True, balanced=True)


@builder
def leap_year(rng: random.Random) -> Task:
    years = [y for y in range(1583, 3000) if not 1900 <= y <= 2100]
    items = []
    for y in years:
        lab = "Yes" if is_leap(y) else "No"
        items.append(Item(str(y), {"y": str(y)}, lab, lab, "generated/gregorian", label=lab))
    return Task(
        "leap_year", "classification",
        ["Is {y} a leap year in the Gregorian calendar? Answer yes or no.",
         "Does the year {y} have a 29 February?", "Yes or no: {y} is a leap year.", "Is {y} a leap year?"],
        items,
        "SYNTHETIC: is a Gregorian year (1583-2999, outside 1900-2100) a leap year? Balanced yes/no.",
        "generated by scripts/build_instruction_tasks.py (Gregorian rule)", "Apache-2.0 (generated)",
        "years outside 1900-2100 so that they do not overlap the date tasks",
        synthetic=True, balanced=True)


@builder
def unicode_category(rng: random.Random) -> Task:
    coarse = {"L": "letter", "N": "digit", "P": "punctuation", "S": "symbol"}
    items = []
    for cp in range(0x21, 0x3000):
        ch = chr(cp)
        cat = unicodedata.category(ch)
        if not unicodedata.name(ch, "") or cat[0] not in coarse or (cat[0] == "N" and cat != "Nd"):
            continue
        lab = coarse[cat[0]]
        items.append(Item(f"U+{cp:04X}", {"ch": ch, "cp": f"{cp:04X}"}, lab, lab, f"unicodedata/U+{cp:04X}",
                          label=lab, claims=(f"char:{ch}",)))
    return Task(
        "unicode_category", "classification",
        ["What kind of character is {ch}? Answer letter, digit, punctuation or symbol.",
         "Classify the character {ch} (U+{cp}) as a letter, digit, punctuation or symbol.",
         "Is {ch} a letter, a digit, punctuation or a symbol?",
         "Character: {ch}\nKind (letter, digit, punctuation or symbol)?"],
        items,
        "Derived classification: whether a Unicode character is a letter, a decimal digit, punctuation or "
        "a symbol (from its general category L*, Nd, P*, S*). Four balanced classes.",
        f"Python unicodedata (Unicode {unicodedata.unidata_version}), code points U+0021-U+2FFF",
        "Unicode Character Database (Unicode license, permissive); facts only",
        "label = first letter of the general category; no character also used by another task",
        derived=True, balanced=True)


# ------------------------------------------------------------------------------------------
# transformation
# ------------------------------------------------------------------------------------------

def clean_name(s: str) -> bool:
    return not any(c in s for c in "(),;[]")


@builder
def translate_countries(rng: random.Random) -> Task:
    items = []
    for c in sorted(iso_table("3166-1"), key=lambda c: c["alpha_2"]):
        en = c.get("common_name", c["name"])
        opts = [(lang, translate("iso_3166-1", lang, en)) for lang in sorted(LANG_NAMES)]
        opts = [(lang, t) for lang, t in opts if t and clean_name(t) and clean_name(en)]
        if not opts:
            continue
        lang, t = rng.choice(opts)
        items.append(Item(c["alpha_2"], {"en": en, "lang": LANG_NAMES[lang]}, t, t,
                          f"iso-codes/iso_3166-1/{c['alpha_2']}/{lang}"))
    return Task(
        "translate_countries", "transformation",
        ['Translate the country name "{en}" into {lang}.', 'What is "{en}" called in {lang}?',
         "How do you say the country name {en} in {lang}?", "Give the {lang} name of the country {en}."],
        items,
        "Translation: the French, German or Spanish name of a country (bilingual iso-codes catalogues).",
        "iso-codes ISO 3166-1 names and their gettext translations (/usr/share/locale/{fr,de,es}/"
        "LC_MESSAGES/iso_3166-1.mo)",
        "LGPL-2.1+ (iso-codes); names only",
        "one language per country, drawn among those whose translation differs from the English name; "
        "names with commas or brackets skipped; the catalogues' own spelling kept (a few Spanish entries "
        "are known to be imperfect)")


@builder
def translate_languages(rng: random.Random) -> Task:
    items = []
    seen: set[str] = set()
    for lg in sorted(iso_table("639-2"), key=lambda x: x["alpha_3"]):
        en = lg["name"]
        if (not clean_name(en) or "languages" in en or en in seen
                or lg["alpha_3"] in ("mis", "mul", "und", "zxx") or "-" in lg["alpha_3"]):
            continue  # language groups and the special codes (uncoded, multiple, undetermined, ...)
        seen.add(en)
        opts = [(lang, translate("iso_639-2", lang, en)) for lang in ("de", "fr")]
        opts = [(lang, t) for lang, t in opts if t and clean_name(t)]
        if not opts:
            continue
        lang, t = rng.choice(opts)
        items.append(Item(lg["alpha_3"], {"en": en, "lang": LANG_NAMES[lang]}, t, t,
                          f"iso-codes/iso_639-2/{lg['alpha_3']}/{lang}"))
    return Task(
        "translate_languages", "transformation",
        ['Translate the language name "{en}" into {lang}.', "What is the {lang} word for the language {en}?",
         'How is the language "{en}" called in {lang}?', "Give the {lang} name of the {en} language."],
        items,
        "Translation: the French or German name of a language (ISO 639-2 individual languages; French "
        "names are lower-case, as French writes them).",
        "iso-codes ISO 639-2 names and their gettext translations (/usr/share/locale/{fr,de}/LC_MESSAGES/"
        "iso_639-2.mo)",
        "LGPL-2.1+ (iso-codes); names only",
        "individual languages (no language groups or special codes); one language per item, drawn among "
        "those whose translation differs from the English name by more than case; Spanish left out (its "
        "catalogue has wrong accents)")


@builder
def spelling_uk(rng: random.Random) -> Task:
    items = []
    for stem, pairs in spelling_families():
        us, uk = min(pairs, key=lambda p: (len(p[0]), p))
        items.append(Item(stem, {"w": us}, uk, uk, f"scowl/{us}", claims=(f"spelling:{stem}",)))
    return Task(
        "spelling_uk", "transformation",
        ['Write the British spelling of the American word "{w}".', 'How is "{w}" spelled in British English?',
         'Convert the US spelling "{w}" to UK spelling.', 'Give the UK English form of "{w}".'],
        items,
        "Spelling: rewrite an American spelling in British English (color -> colour, analyze -> analyse).",
        "wamerican / wbritish (SCOWL): a word only in american-english paired with the one word only in "
        "british-english that a spelling rule produces",
        "SCOWL (permissive, see /usr/share/doc/wamerican/copyright); facts only",
        "the pair must be unique under rules such as -iz-/-is-, -yz-/-ys-, -or/-our, -er/-re, -og/-ogue, "
        "-ense/-ence, e/ae, e/oe, l/ll, o/ou, gray/grey; one word (the shortest) per family; families "
        "are built first, spelling_variety gets the rest", derived=True)


@builder
def spelling_variety(rng: random.Random) -> Task:
    items = []
    for stem, pairs in spelling_families():
        us, uk = rng.choice(pairs)
        w, lab = (us, "American") if rng.random() < 0.5 else (uk, "British")
        src = f"scowl/{'wamerican' if lab == 'American' else 'wbritish'}/{w}"
        items.append(Item(stem, {"w": w}, lab, lab, src, label=lab, claims=(f"spelling:{stem}",)))
    return Task(
        "spelling_variety", "classification",
        ['Is "{w}" the American or the British spelling?',
         'Which spelling convention does "{w}" follow: American or British?',
         "American or British English spelling: {w}",
         'Classify the spelling of "{w}" as American or British.'],
        items,
        "Derived classification: is a word the American or the British spelling (colour -> British)? "
        "Balanced classes; label from which SCOWL list has the word.",
        "wamerican / wbritish (SCOWL) word lists: words in only one list, paired by spelling rules",
        "SCOWL (permissive, see /usr/share/doc/wamerican/copyright); facts only",
        "word families disjoint from spelling_uk (built first), one word of either spelling per family",
        derived=True, balanced=True)


CASE_STYLES = {
    "snake_case": lambda ws: "_".join(ws),
    "camelCase": lambda ws: ws[0] + "".join(w.capitalize() for w in ws[1:]),
    "PascalCase": lambda ws: "".join(w.capitalize() for w in ws),
    "kebab-case": lambda ws: "-".join(ws),
    "UPPER_SNAKE_CASE": lambda ws: "_".join(w.upper() for w in ws),
    "Title Case": lambda ws: " ".join(w.capitalize() for w in ws),
}


@builder
def case_conversion(rng: random.Random) -> Task:
    words = common_words()
    items = []
    styles = sorted(CASE_STYLES)
    for _ in range(600):
        ws = rng.sample(words, rng.randint(2, 4))
        style = rng.choice(styles)
        out = CASE_STYLES[style](ws)
        phrase = " ".join(ws)
        items.append(Item(f"{phrase}/{style}", {"phrase": phrase, "style": style}, out, out,
                          f"generated/case/{style}"))
    return Task(
        "case_conversion", "transformation",
        ['Convert "{phrase}" to {style}.', 'Rewrite the phrase "{phrase}" in {style}.',
         'Write "{phrase}" as {style}.', 'Change the case of "{phrase}" to {style}.'],
        _unique(items),
        "SYNTHETIC: rewrite a phrase of 2-4 dictionary words in snake_case, camelCase, PascalCase, "
        "kebab-case, UPPER_SNAKE_CASE or Title Case.",
        "generated by scripts/build_instruction_tasks.py; words from wamerican/wbritish",
        "Apache-2.0 (generated); words from SCOWL (permissive)",
        "random words spelt alike in both lists, 3-8 letters, a block list of offensive words removed",
        synthetic=True)


def unit_pool() -> list[tuple[str, str, Decimal, Decimal]]:
    """(from unit, to unit, value, result) with exact factors; inverse conversions start from the result."""
    D = Decimal
    lin = [("inches", "centimetres", D("2.54")), ("feet", "metres", D("0.3048")),
           ("yards", "metres", D("0.9144")), ("miles", "kilometres", D("1.609344")),
           ("kilometres", "metres", D(1000)), ("metres", "centimetres", D(100)),
           ("kilograms", "grams", D(1000)), ("litres", "millilitres", D(1000)),
           ("hours", "minutes", D(60)), ("minutes", "seconds", D(60)), ("days", "hours", D(24)),
           ("weeks", "days", D(7)), ("feet", "inches", D(12)), ("yards", "feet", D(3)),
           ("hours", "seconds", D(3600)), ("kibibytes", "bytes", D(1024)),
           ("mebibytes", "kibibytes", D(1024))]
    out = []
    for fu, tu, f in lin:
        for k in range(2, 41):
            out.append((fu, tu, D(k), D(k) * f))
            out.append((tu, fu, D(k) * f, D(k)))
        for half in ("2.5", "3.5", "7.5", "12.5"):
            out.append((fu, tu, D(half), D(half) * f))
    return out


@builder
def unit_conversion(rng: random.Random) -> Task:
    items = []
    for fu, tu, v, r in unit_pool():
        vs, rs = dec(v), dec(r)
        items.append(Item(f"{vs} {fu} -> {tu}", {"v": vs, "fu": fu, "tu": tu}, f"{rs} {tu}", rs,
                          f"generated/units/{fu}-{tu}"))
    return Task(
        "unit_conversion", "transformation",
        ["Convert {v} {fu} to {tu}.", "How many {tu} are in {v} {fu}?", "{v} {fu} is how many {tu}?",
         "Express {v} {fu} in {tu}."],
        items,
        "SYNTHETIC: unit conversion with exact factors (inch = 2.54 cm, foot = 0.3048 m, mile = "
        "1.609344 km, time units, KiB = 1024 bytes, ...) in both directions; the answer is the number.",
        "generated by scripts/build_instruction_tasks.py (exact decimal arithmetic)",
        "Apache-2.0 (generated)",
        "17 exact conversions and their inverses; results printed exactly, without trailing zeros",
        synthetic=True)


@builder
def roman_numerals(rng: random.Random) -> Task:
    items = [Item(str(n), {"n": str(n)}, roman(n), roman(n), "generated/roman", claims=(f"number:{n}",))
             for n in range(1, 4000)]
    return Task(
        "roman_numerals", "transformation",
        ["Write {n} in Roman numerals.", "What is {n} as a Roman numeral?",
         "Convert the number {n} to Roman numerals.", "Give the Roman numeral for {n}."],
        items,
        "SYNTHETIC: write a number from 1 to 3999 in Roman numerals.",
        "generated by scripts/build_instruction_tasks.py", "Apache-2.0 (generated)",
        "numbers not used by the other number tasks", synthetic=True)


@builder
def number_to_words(rng: random.Random) -> Task:
    items = []
    for _ in range(800):
        n = rng.choice([rng.randint(10, 99), rng.randint(100, 999), rng.randint(1000, 999999)])
        w = number_words(n)
        items.append(Item(str(n), {"n": f"{n:,}"}, w, w, "generated/number-words", claims=(f"number:{n}",)))
    return Task(
        "number_to_words", "transformation",
        ["Write the number {n} in words.", "Spell out {n} in English words.",
         "How do you write {n} in words?", "Express {n} in words."],
        _unique(items),
        "SYNTHETIC: spell out a number (10 to 999,999) in English words, American style without 'and'.",
        "generated by scripts/build_instruction_tasks.py", "Apache-2.0 (generated)",
        "two-digit, three-digit and larger numbers in equal shares; numbers not used by other tasks",
        synthetic=True)


@builder
def sort_words(rng: random.Random) -> Task:
    words = common_words()
    items = []
    for _ in range(600):
        ws = rng.sample(words, rng.randint(4, 6))
        out = ", ".join(sorted(ws))
        items.append(Item(out, {"words": ", ".join(ws)}, out, out, "generated/sort"))
    return Task(
        "sort_words", "transformation",
        ["Sort these words alphabetically: {words}", "Put the following words in alphabetical order: {words}",
         "Arrange in A-Z order: {words}", "Alphabetize this list: {words}"],
        _unique(items),
        "SYNTHETIC: sort 4-6 dictionary words into alphabetical order.",
        "generated by scripts/build_instruction_tasks.py; words from wamerican/wbritish",
        "Apache-2.0 (generated); words from SCOWL (permissive)",
        "random common words (block list applied); response comma-separated", synthetic=True)


# ------------------------------------------------------------------------------------------
# extraction
# ------------------------------------------------------------------------------------------

def json_record(rng: random.Random, words: tuple[str, ...]) -> dict:
    kind = rng.randrange(4)
    first, last = person(rng)
    price = f"{rng.randint(1, 99)}.{rng.choice(['00', '25', '49', '50', '75', '95', '99'])}"
    if kind == 0:
        return {"name": f"{first} {last}", "age": rng.randint(18, 90), "city": rng.choice(TOWNS),
                "member": rng.random() < 0.5}
    if kind == 1:
        w = rng.choice(words)
        return {"sku": f"{w[:3].upper()}-{rng.randint(100, 9999)}", "item": w, "color": rng.choice(COLOURS),
                "price": float(price), "stock": rng.randint(0, 500)}
    if kind == 2:
        return {"title": f"The {rng.choice(words).capitalize()} of {rng.choice(words).capitalize()}",
                "author": f"{first} {last}", "year": rng.randint(1900, 2023), "pages": rng.randint(80, 900)}
    return {"order_id": rng.randint(10000, 99999), "status": rng.choice(["shipped", "pending", "delivered",
                                                                         "cancelled"]),
            "total": float(price), "items": rng.randint(1, 12)}


@builder
def json_field(rng: random.Random) -> Task:
    words = common_words()
    items = []
    for _ in range(600):
        rec = json_record(rng, words)
        field = rng.choice(sorted(rec))
        v = rec[field]
        resp = json.dumps(v) if isinstance(v, bool) else str(v)
        text = json.dumps(rec)
        items.append(Item(f"{text}/{field}", {"json": text, "field": field}, resp, resp,
                          "generated/json"))
    return Task(
        "json_field", "extraction",
        ['Here is a JSON object: {json}\nWhat is the value of "{field}"?',
         'From the JSON {json}, extract the "{field}" field.',
         "{json}\nReturn the value of the key {field}.",
         "Read this JSON and give the {field}: {json}"],
        _unique(items),
        "SYNTHETIC: read one field out of a small generated JSON record (person, product, book, order).",
        "generated by scripts/build_instruction_tasks.py", "Apache-2.0 (generated)",
        "four record shapes, random values; strings answered without quotes, booleans as true/false",
        synthetic=True)


@builder
def url_domain(rng: random.Random) -> Task:
    words = common_words()
    items = []
    for _ in range(600):
        name = rng.choice(words) + (f"-{rng.choice(words)}" if rng.random() < 0.3 else "")
        host = ".".join(([rng.choice(SUBDOMAINS)] if rng.random() < 0.6 else []) + [name, rng.choice(TLDS)])
        port = f":{rng.choice([8080, 8443, 3000, 5000])}" if rng.random() < 0.15 else ""
        path = "/".join(rng.sample(words, rng.randint(1, 2)))
        query = f"?id={rng.randint(1, 999)}" if rng.random() < 0.4 else ""
        url = f"{rng.choice(['https', 'https', 'http'])}://{host}{port}/{path}{query}"
        items.append(Item(url, {"url": url}, host, host, "generated/url"))
    return Task(
        "url_domain", "extraction",
        ["What is the domain name (host) in this URL? {url}", "Extract the host name from {url}",
         "URL: {url}\nWhich host does it point to?", "Give the domain of the link {url}"],
        _unique(items),
        "SYNTHETIC: extract the host name from a generated URL (with subdomains, ports, paths, queries).",
        "generated by scripts/build_instruction_tasks.py; words from wamerican/wbritish",
        "Apache-2.0 (generated); words from SCOWL (permissive)",
        "answer is the full host without scheme, port or path", synthetic=True)


EMAIL_SENTENCES = [
    "Please send the {doc} to {email} before {day}.",
    "For questions about the {doc}, write to {email}.",
    "{first} asked us to copy {email} on every message about the {doc}.",
    "The {doc} came from {email} late on {day}.",
    "You can reach the front desk at {email} or by phone.",
    "Replies to the {doc} should go to {email}, not to me.",
    "If the link fails, email {email} and mention the {doc}.",
]


@builder
def email_extract(rng: random.Random) -> Task:
    words = common_words()
    docs = ["invoice", "report", "contract", "schedule", "survey", "quote", "receipt", "agenda", "draft"]
    items = []
    for _ in range(600):
        first, last = person(rng)
        local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{first}{rng.randint(1, 99)}",
                            f"{last}.{first[0]}"]).lower()
        email = f"{local}@{rng.choice(words)}.{rng.choice(TLDS)}"
        text = rng.choice(EMAIL_SENTENCES).format(doc=rng.choice(docs), email=email,
                                                  day=rng.choice(WEEKDAYS), first=rng.choice(FIRST_NAMES))
        items.append(Item(email, {"text": text}, email, email, "generated/email"))
    return Task(
        "email_extract", "extraction",
        ["Extract the email address from this text: {text}", "Which email address is mentioned here? {text}",
         "Text: {text}\nEmail address:", "Find the email address in the following sentence. {text}"],
        _unique(items),
        "SYNTHETIC: extract the one email address from a generated sentence.",
        "generated by scripts/build_instruction_tasks.py; words from wamerican/wbritish",
        "Apache-2.0 (generated); words from SCOWL (permissive)",
        "seven sentence frames, invented names, dictionary-word domains", synthetic=True)


DATE_SENTENCES = [
    "The {event} took place on {date}.", "We signed the lease on {date}.",
    "Her flight to {town} leaves on {date}.", "The shop reopened on {date} after the repairs.",
    "Payment for the {event} is due on {date}.", "The letter is dated {date}.",
    "On {date} the {event} was moved to {town}.", "{first} started the new job on {date}.",
]


@builder
def date_extract(rng: random.Random) -> Task:
    events = ["meeting", "concert", "launch", "inspection", "wedding", "auction", "workshop", "match"]
    items = []
    for _ in range(600):
        d = random_date(rng)
        text = rng.choice(DATE_SENTENCES).format(event=rng.choice(events), date=rng.choice(date_phrases(d)),
                                                 town=rng.choice(TOWNS), first=rng.choice(FIRST_NAMES))
        text = text[0].upper() + text[1:]
        items.append(Item(d.isoformat(), {"text": text}, d.isoformat(), d.isoformat(), "generated/date",
                          claims=(f"date:{d.isoformat()}",)))
    return Task(
        "date_extract", "extraction",
        ["Extract the date from this sentence and write it as YYYY-MM-DD: {text}",
         "{text}\nWhat date is mentioned? Answer in the format YYYY-MM-DD.",
         "Give the date in the following text in ISO 8601 form: {text}",
         'Find the date in "{text}" and write it as year-month-day (YYYY-MM-DD).'],
        _unique(items),
        "SYNTHETIC: find the date in a generated sentence and normalise it to ISO 8601 (YYYY-MM-DD).",
        "generated by scripts/build_instruction_tasks.py", "Apache-2.0 (generated)",
        "dates 1900-2100 written four ways ('March 3, 1987', '3 March 1987', 'the 3rd of March 1987', "
        "'Mar. 3, 1987'); not used by the other date tasks", synthetic=True)


# ------------------------------------------------------------------------------------------
# code_reading (answers computed by running the generated code)
# ------------------------------------------------------------------------------------------

SAFE_BUILTINS = {n: getattr(builtins, n) for n in (
    "abs", "bool", "bytes", "complex", "dict", "divmod", "frozenset", "int", "len", "list", "max", "min",
    "print", "range", "round", "set", "sorted", "str", "sum", "tuple", "type")}


def run_eval(expr: str):
    return eval(expr, {"__builtins__": SAFE_BUILTINS})  # generated expressions only


def run_print(code: str) -> str:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(code, {"__builtins__": SAFE_BUILTINS})  # generated programs only
    return buf.getvalue().rstrip("\n")


def gen_expression(rng: random.Random, words: tuple[str, ...]) -> str:
    a, b, c = rng.randint(2, 30), rng.randint(2, 12), rng.randint(1, 9)
    w = rng.choice(words)
    nums = rng.sample(range(1, 25), rng.randint(3, 5))
    k = rng.randrange(8)
    if k == 0:
        o1, o2 = rng.choice("+-*"), rng.choice("+-*")
        return rng.choice([f"{a} {o1} {b} {o2} {c}", f"({a} {o1} {b}) {o2} {c}", f"{a} {o1} ({b} {o2} {c})"])
    if k == 1:
        return rng.choice([f"{a} // {b}", f"{a} % {b}", f"{b} ** {rng.randint(2, 3)}", f"-{a} // {b}",
                           f"{a} // {b} + {a} % {b}"])
    if k == 2:
        i = rng.randint(0, 2)
        return rng.choice([f"'{w}'.upper()", f"'{w}'[{i}:{i + 2}]", f"len('{w}')", f"'{w}'[::-1]",
                           f"'{w}'.count('{rng.choice(w)}')", f"'{w}'[-{rng.randint(1, 3)}]",
                           f"'{w}'.capitalize() + '!'", f"'{w}'.find('{rng.choice(w)}')"])
    if k == 3:
        return rng.choice([f"sorted({nums})", f"sum({nums})", f"max({nums}) - min({nums})",
                           f"{nums}[{rng.randint(0, 2)}]", f"{nums}[-1]", f"{nums}[1:]", f"len({nums} * 2)"])
    if k == 4:
        return f"list(range({c}, {c + a}, {rng.randint(2, 5)}))"
    if k == 5:
        return rng.choice([f"[x * {b} for x in range({rng.randint(2, 5)})]",
                           f"[x for x in {nums} if x % 2 == 0]", f"[n % {c + 1} for n in {nums}]"])
    if k == 6:
        return rng.choice([f"{a} > {b} and {c} < {b}", f"not {a} == {b}", f"{a} % 2 == 0 or {b} > {c}",
                           f"{a} in {nums}"])
    return rng.choice([f"int('{a}') + {b}", f"str({a}) + '{b}'", f"divmod({a}, {b})", f"abs({b} - {a})",
                       f"round({a} / {b}, 2)", f"'-'.join(['{w}', '{a}'])"])


@builder
def python_eval(rng: random.Random) -> Task:
    words = common_words()
    items = []
    for _ in range(800):
        expr = gen_expression(rng, words)
        val = repr(run_eval(expr))
        items.append(Item(expr, {"expr": expr}, val, val, "generated/python-expression"))
    return Task(
        "python_eval", "code_reading",
        ["What does the Python expression {expr} evaluate to?", "Evaluate this Python expression: {expr}",
         "In Python, what is the value of `{expr}`?", "What is the result of {expr} in Python?"],
        _unique(items),
        "SYNTHETIC: evaluate a small Python expression (arithmetic, //, %, strings, lists, comprehensions, "
        "booleans); the response is the value's repr.",
        "generated by scripts/build_instruction_tasks.py; answers computed with Python "
        f"{sys.version.split()[0]}",
        "Apache-2.0 (generated)", "eight expression shapes with random operands; evaluated by eval()",
        synthetic=True)


def gen_program(rng: random.Random, words: tuple[str, ...]) -> str:
    a, b = rng.randint(1, 9), rng.randint(3, 12)
    w = rng.choice(words)
    nums = rng.sample(range(1, 30), rng.randint(3, 5))
    k = rng.randrange(9)
    if k == 0:
        return f"total = 0\nfor i in range({a}, {a + b}):\n    total += i\nprint(total)"
    if k == 1:
        return f"s = ''\nfor ch in '{w}':\n    s = ch + s\nprint(s)"
    if k == 2:
        m = rng.randint(2, 3)
        nums[0] = nums[0] * m if nums[0] * m < 60 else m  # at least one multiple, so the list is not empty
        return f"nums = {nums}\nprint([n for n in nums if n % {m} == 0])"
    if k == 3:
        n = rng.randint(20, 500)
        return f"n = {n}\ncount = 0\nwhile n > 1:\n    n //= 2\n    count += 1\nprint(count)"
    if k == 4:
        return f"d = {{'a': {a}, 'b': {b}}}\nd['c'] = d['a'] * d['b']\nprint(len(d), d['c'])"
    if k == 5:
        return f"word = '{w}'\nprint(f'{{word.upper()}} has {{len(word)}} letters')"
    if k == 6:
        x = rng.randint(2, 40)
        return f"x = {x}\nif x % 3 == 0:\n    print('fizz')\nelse:\n    print(x * {a})"
    if k == 7:
        return f"def f(x):\n    return x * x + {a}\n\nprint(f({b}))"
    return f"items = {nums}\nitems.append({a})\nitems.sort()\nprint(items[0], items[-1], sep='-')"


@builder
def print_output(rng: random.Random) -> Task:
    words = common_words()
    items = []
    for _ in range(800):
        code = gen_program(rng, words)
        out = run_print(code)
        items.append(Item(code, {"code": code}, out, out, "generated/python-program"))
    return Task(
        "print_output", "code_reading",
        ["What does this Python code print?\n{code}", "Predict the output of the following program.\n{code}",
         "{code}\nWhat is printed when this runs?",
         "Run this Python snippet in your head and give its output:\n{code}"],
        _unique(items),
        "SYNTHETIC: predict the (one-line) output of a short generated Python program with loops, "
        "conditions, a function, f-strings or a dict.",
        "generated by scripts/build_instruction_tasks.py; outputs computed by running the programs "
        f"(Python {sys.version.split()[0]})",
        "Apache-2.0 (generated)", "nine program shapes with random constants; each prints one line",
        synthetic=True)


def gen_typed_expression(rng: random.Random, words: tuple[str, ...]) -> str:
    a, b = rng.randint(2, 60), rng.randint(2, 9)
    w, w2 = rng.choice(words), rng.choice(words)
    return rng.choice([
        f"{a} / {b}", f"{a} // {b}", f"{a} * 1.0", f"{a} ** -1", f"'{w}'[{rng.randint(0, 3)}]",
        f"'{w}'.split('{rng.choice(w)}')", f"({a}, {b})", f"{{'{w}': {a}}}", f"{{{a}, {b}}}", f"{a} > {b}",
        f"len('{w}') == {b}", f"{{'{w}': {a}}}.get('{w2}')", f"range({a})", f"b'{w}'", f"{a} + {b}j",
        f"str({a})", f"int('{a}') + {b}", f"list('{w}')", f"sorted({{{a}, {b}}})", f"tuple('{w}')",
        f"divmod({a}, {b})", f"frozenset('{w}')", f"abs(-{a})", f"'{w}'.upper() == '{w}'", f"[{a}] * {b}",
        f"dict(a={a})", f"set('{w}')", f"round({a} / {b})", f"'{w}'.encode()", f"{a} % {b} == 0",
        f"print('{w}')", f"'{w}' * {b}", f"{a}.5 + {b}", f"complex({a}, {b})"])


@builder
def type_of(rng: random.Random) -> Task:
    words = common_words()
    items = []
    for _ in range(1500):
        expr = gen_typed_expression(rng, words)
        if expr.startswith("print("):
            typ = "NoneType"  # print returns None; evaluated without printing
        else:
            typ = type(run_eval(expr)).__name__
        items.append(Item(expr, {"expr": expr}, typ, typ, "generated/python-type", label=typ))
    return Task(
        "type_of", "code_reading",
        ["What is the type of {expr} in Python? Give the type name.",
         "What does type({expr}).__name__ return?",
         "In Python, the expression {expr} produces a value of which type?",
         "Name the Python type of the expression `{expr}`."],
        _unique(items),
        "SYNTHETIC: name the type of a small Python expression (int, float, str, list, tuple, dict, set, "
        "frozenset, bool, NoneType, range, bytes, complex); balanced over types.",
        "generated by scripts/build_instruction_tasks.py; types computed with Python "
        f"{sys.version.split()[0]}",
        "Apache-2.0 (generated)", "34 expression shapes with random operands; equal rows per type",
        synthetic=True, balanced=True)


REGEX_PIECES = [
    (r"[a-z]+", lambda r, w: rng_word(r, w)), (r"[A-Z]", lambda r, w: r.choice("ABCDEFGHKMPRTZ")),
    (r"\d{2}", lambda r, w: f"{r.randint(10, 99)}"), (r"\d+", lambda r, w: str(r.randint(0, 9999))),
    (r"[aeiou]", lambda r, w: r.choice("aeiou")), (r"(cat|dog)", lambda r, w: r.choice(["cat", "dog"])),
    (r"x?", lambda r, w: r.choice(["", "x"])), (r"-", lambda r, w: "-"), (r"_", lambda r, w: "_"),
    (r"\.", lambda r, w: "."), (r"[0-9a-f]{3}", lambda r, w: "".join(r.choice("0123456789abcdef")
                                                                       for _ in range(3))),
    (r"(ab)+", lambda r, w: "ab" * r.randint(1, 3)), (r"[^0-9]", lambda r, w: r.choice("kq#z")),
]


def rng_word(rng: random.Random, words: tuple[str, ...]) -> str:
    return rng.choice(words)[:rng.randint(2, 5)]


@builder
def regex_match(rng: random.Random) -> Task:
    words = common_words()
    items = []
    for _ in range(1500):
        pieces = rng.sample(REGEX_PIECES, rng.randint(2, 4))
        pat = "".join(p for p, _ in pieces)
        s = "".join(g(rng, words) for _, g in pieces)
        if rng.random() < 0.55:  # corrupt the string: insert, delete or replace one character
            i = rng.randrange(len(s) + 1)
            op = rng.randrange(3)
            ch = rng.choice("a9Z-_.x")
            s = s[:i] + ch + s[i:] if op == 0 or not s else (s[:i] + s[i + 1:] if op == 1 else
                                                                s[:i] + ch + s[i + 1:])
        if not s or " " in s:
            continue
        lab = "Yes" if re.fullmatch(pat, s) else "No"
        items.append(Item(f"{pat} {s}", {"pat": pat, "s": s}, lab, lab, "generated/regex", label=lab))
    return Task(
        "regex_match", "code_reading",
        ['Does the regular expression {pat} match the whole string "{s}"? Answer yes or no.',
         'Yes or no: the pattern {pat} fully matches "{s}".',
         "Regex: {pat}\nString: {s}\nDoes the regex match the entire string (yes or no)?",
         'In Python, is re.fullmatch(r"{pat}", "{s}") a match? Answer yes or no.'],
        _unique(items),
        "SYNTHETIC: does a small regular expression match a whole string? Balanced yes/no; answers from "
        "Python's re.fullmatch.",
        "generated by scripts/build_instruction_tasks.py; answers computed with Python re",
        "Apache-2.0 (generated)",
        "2-4 pieces (classes, quantifiers, groups, alternation); strings sampled from the pattern, about "
        "half then corrupted by one edit", synthetic=True, balanced=True)


# ------------------------------------------------------------------------------------------
# long_answer
# ------------------------------------------------------------------------------------------

_SENT = re.compile(r"(?<!\be\.g\.)(?<!\bi\.e\.)(?<!\betc\.)(?<=[.!?])\s+(?=[A-Z(\"'])")


def faq_entries() -> list[tuple[str, str, list[str]]]:
    """(page, question, sentences of the answer's leading prose) for each question of the Python FAQ;
    the prose ends at the first code sample, list or directive, and a sentence introducing code (ending
    in ':') is dropped."""
    out = []
    for p in sorted(FAQ_DIR.glob("*.rst.txt")):
        lines = p.read_text(encoding="utf-8").splitlines()
        heads = [i for i in range(len(lines) - 1)
                 if lines[i].strip().endswith("?") and not lines[i].startswith((" ", "\t"))
                 and re.fullmatch(r"[-=~^*#]{3,}", lines[i + 1].strip() or "x")]
        for j, i in enumerate(heads):
            end = heads[j + 1] if j + 1 < len(heads) else len(lines)
            sents: list[str] = []
            for block in re.split(r"\n\s*\n", "\n".join(lines[i + 2:end]).strip("\n")):
                bl = block.splitlines()
                st = [ln.strip() for ln in bl]
                if (not bl or bl[0].startswith((" ", "\t")) or
                        any(s.startswith(("..", ">>>", "* ", "- ", "+", "|", "=", "#", "$", "%"))
                            or re.fullmatch(r"[-=~^*#]{3,}", s) or re.match(r"\d+\.\s", s) for s in st)):
                    break
                raw = " ".join(st)
                raw = re.sub(r":pep:`(\d+)`", r"PEP \1", raw)
                raw = re.sub(r":(?:ref|doc):`[^`<]*`", "\x00", raw)  # bare cross-reference labels: unusable
                sents += [s for s in _SENT.split(base.rst_clean(raw))]
                if raw.rstrip().endswith(":"):
                    break
            sents = [s for s in sents if "\x00" not in s]
            while sents and not sents[-1].endswith((".", "!", "?")):
                sents.pop()
            if sents:
                out.append((p.name[:-8], base.rst_clean(lines[i].strip()), sents))
    return out


@builder
def python_faq(rng: random.Random) -> Task:
    items = []
    for page, q, sents in faq_entries():
        # the longest run of leading sentences that fits the token window with the longest template
        for k in range(len(sents), 0, -1):
            ans = " ".join(sents[:k])
            if base.ntokens(f"Here is a question from the Python FAQ. {q}\n{ans}") <= LONG_TOKENS[1]:
                break
        else:
            continue
        if k < 2 and base.nwords(ans) < 20:
            continue  # a one-line answer ("See the next question.") is not a long answer
        slug = re.sub(r"[^a-z0-9]+", "-", q.lower()).strip("-")[:60]
        items.append(Item(f"{page}/{slug}", {"q": q}, ans, None, f"python3.11-doc/faq/{page}#{slug}"))
    return Task(
        "python_faq", "long_answer",
        ["{q}", "Python FAQ: {q}", "Answer this question about Python: {q}",
         "Here is a question from the Python FAQ. {q}"],
        items,
        "Long answer (human-written): a question from the official Python FAQ answered with the first "
        "sentences of the FAQ's own answer.",
        "python3.11-doc /usr/share/doc/python3.11/html/_sources/faq/*.rst.txt (the Python FAQ)",
        "PSF-2.0 (Python documentation)",
        "each '?' heading of the FAQ pages; answer = leading prose up to the first code sample or list, "
        "reST markup stripped, as many whole sentences as fit 96 tokens; answers of one short sentence "
        "skipped (the source has fewer than 180 usable questions, so 20 are held out)")


def worked_item(rng: random.Random) -> tuple[str, str]:
    k = rng.randrange(4)
    if k == 0:
        a, b = rng.randint(12, 99), rng.randint(13, 99)
        if b % 10 == 0:
            b += 1
        t, o = b - b % 10, b % 10
        return (f"{a} × {b}", f"Split {b} into {t} + {o}. {a} × {t} = {a * t}. {a} × {o} = {a * o}. "
                              f"Adding the parts: {a * t} + {a * o} = {a * b}. So {a} × {b} = {a * b}.")
    if k == 1:
        p = rng.choice([5, 10, 15, 20, 25, 30, 40, 60, 75])
        n = rng.randint(2, 40) * 20
        tenth = Decimal(n) / 10
        res = Decimal(n) * p / 100
        return (f"{p}% of {n}", f"{p}% means {p} hundredths. 10% of {n} is {dec(tenth)}, so 1% is "
                                f"{dec(tenth / 10)}. Multiply by {p}: {dec(tenth / 10)} × {p} = {dec(res)}. "
                                f"So {p}% of {n} is {dec(res)}.")
    if k == 2:
        a, b, c = rng.randint(100, 999), rng.randint(100, 999), rng.randint(10, 99)
        return (f"{a} + {b} + {c}", f"First add {a} and {b}: {a} + {b} = {a + b}. Then add {c}: "
                                    f"{a + b} + {c} = {a + b + c}. So the total is {a + b + c}.")
    d = rng.randint(3, 19)
    q, r = rng.randint(5, 60), rng.randint(1, d - 1)
    n = d * q + r
    return (f"{n} ÷ {d}",
            f"Find the largest multiple of {d} that is not more than {n}: {d} × {q} = {d * q}. "
            f"Subtract: {n} - {d * q} = {r}. Since {r} is less than {d}, the quotient is {q} and "
            f"the remainder is {r}. So {n} ÷ {d} = {q} remainder {r}.")


@builder
def worked_arithmetic(rng: random.Random) -> Task:
    items = []
    for _ in range(800):
        expr, steps = worked_item(rng)
        items.append(Item(expr, {"expr": expr}, steps, None, "generated/worked-arithmetic"))
    return Task(
        "worked_arithmetic", "long_answer",
        ["Work out {expr} step by step.", "Calculate {expr}. Show your working.",
         "Solve {expr} and explain each step.", "What is {expr}? Explain how you got the answer."],
        _unique(items),
        "SYNTHETIC: step-by-step worked arithmetic (two-digit multiplication, percentages, three-number "
        "sums, division with remainder); multi-sentence responses.",
        "generated by scripts/build_instruction_tasks.py", "Apache-2.0 (generated)",
        "four worked-solution templates with random numbers; every step computed exactly", synthetic=True)


@builder
def date_facts(rng: random.Random) -> Task:
    items = []
    for _ in range(600):
        d = random_date(rng)
        leap = "is" if is_leap(d.year) else "is not"
        iy, iw, _ = d.isocalendar()
        week = f"ISO week {iw}" + (f" of {iy}" if iy != d.year else "")
        text = (f"{long_date(d)} is a {WEEKDAYS[d.weekday()]}. It is day {d.timetuple().tm_yday} of "
                f"{d.year}, which {leap} a leap year. It falls in {week}.")
        items.append(Item(d.isoformat(), {"iso": d.isoformat()}, text, None, "generated/calendar",
                          claims=(f"date:{d.isoformat()}",)))
    return Task(
        "date_facts", "long_answer",
        ["Tell me about the date {iso}.", "Describe the calendar date {iso}.",
         "What can you say about {iso} in the calendar?", "Give some calendar facts about {iso}."],
        _unique(items),
        "SYNTHETIC: a few calendar facts about an ISO date (weekday, day of the year, leap year, ISO week) "
        "in three sentences.",
        "generated by scripts/build_instruction_tasks.py (Python datetime)", "Apache-2.0 (generated)",
        "random dates 1900-2100 not used by the other date tasks", synthetic=True)


@builder
def number_facts(rng: random.Random) -> Task:
    items = []
    for n in range(10, 1000):
        parity = "an even" if n % 2 == 0 else "an odd"
        if is_prime(n):
            prime = "It is a prime number."
        else:
            prime = f"It is not prime: {n} = {' × '.join(map(str, factorise(n)))}."
        text = (f"{n} is {parity} number. {prime} In Roman numerals it is {roman(n)}, and in binary it is "
                f"{n:b}.")
        items.append(Item(str(n), {"n": str(n)}, text, None, "generated/number", claims=(f"number:{n}",)))
    return Task(
        "number_facts", "long_answer",
        ["Tell me about the number {n}.", "Describe the number {n}.", "Give a few facts about {n}.",
         "What can you say about the integer {n}?"],
        items,
        "SYNTHETIC: facts about a number from 10 to 999 (parity, primality or prime factorisation, Roman "
        "numeral, binary) in three sentences.",
        "generated by scripts/build_instruction_tasks.py", "Apache-2.0 (generated)",
        "numbers not used by the other number tasks", synthetic=True)


def _unique(items: list[Item]) -> list[Item]:
    """Generated pools can draw the same item twice; keep the first of each key."""
    seen: set[str] = set()
    out = []
    for it in items:
        if it.key not in seen:
            seen.add(it.key)
            out.append(it)
    return out


# ------------------------------------------------------------------------------------------
# assembling, checking, writing
# ------------------------------------------------------------------------------------------

_PROSE_PUNCT = re.compile(r"[.,;:!?'\"`()\[\]]")


def norm(text: str) -> str:
    """Normalised text for the no-repeat check: NFKC, case-folded, prose punctuation dropped, whitespace
    collapsed. Operators and symbols are kept, so '7 * 2' and '7 + 2' (or two characters) stay apart."""
    t = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_PROSE_PUNCT.sub(" ", t).split())


def assemble(task: Task, rng: random.Random, used: set[str], claimed: set[str]) -> list[dict]:
    """Rows for one task: items shuffled with the seed, one template drawn per item, items kept when the
    text fits the token window, repeats no earlier text and claims nothing another task took; then
    the split (train first, held-out last) by item."""
    if task.category not in CATEGORIES:
        raise SystemExit(f"{task.name}: unknown category {task.category}")
    if not task.grouped and len({it.key for it in task.items}) != len(task.items):
        raise SystemExit(f"{task.name}: duplicate item keys")
    lo, hi = LONG_TOKENS if task.category == "long_answer" else TOKENS
    n_total = N_TRAIN + N_HELDOUT
    pool = sorted(task.items, key=lambda it: (it.key, it.source, it.response))
    rng.shuffle(pool)
    quota = None
    if task.balanced:
        labels = sorted({it.label for it in pool})
        quota = -(-n_total // len(labels))
        n_total = min(n_total, quota * len(labels))
    picked: list[tuple[Item, str]] = []
    per_label: dict[str, int] = {}
    for it in pool:
        if len(picked) == n_total:
            break
        if quota is not None and per_label.get(it.label, 0) >= quota:
            continue
        if any(c in claimed for c in it.claims):
            continue
        prompt = base.pair_prompt(rng.choice(task.templates).format(**it.fields))
        text = prompt + it.response
        if not lo <= base.ntokens(text) <= hi:
            continue
        k = norm(text)
        if k in used:
            continue
        used.add(k)
        claimed.update(it.claims)
        per_label[it.label] = per_label.get(it.label, 0) + 1
        picked.append((it, prompt))
    if quota is not None and len(picked) < n_total:
        # a class ran short: trim the others so that the classes stay equal
        least = min(per_label.values())
        kept, counts = [], {}
        for it, p in picked:
            if counts.get(it.label, 0) < least:
                kept.append((it, p))
                counts[it.label] = counts.get(it.label, 0) + 1
        picked = kept
    n = len(picked)
    if n >= N_TRAIN + N_HELDOUT:
        n_train, n_held = N_TRAIN, N_HELDOUT
    else:
        n_held, n_train = MIN_HELDOUT, n - MIN_HELDOUT
        if n_train < MIN_TRAIN:
            raise SystemExit(f"{task.name}: only {n} usable items (need {MIN_TRAIN + MIN_HELDOUT})")
    # held-out: whole items (groups) from the end of the shuffled order, until exactly n_held rows
    groups: dict[str, list[int]] = {}
    for i, (it, _) in enumerate(picked):
        groups.setdefault(it.key, []).append(i)
    held: set[int] = set()
    for g in reversed(list(groups.values())):
        if len(held) + len(g) <= n_held:
            held.update(g)
        if len(held) == n_held:
            break
    if len(held) != n_held:
        raise SystemExit(f"{task.name}: could not hold out exactly {n_held} rows by item")
    train = [i for i in range(n) if i not in held][:n_train]
    rows = []
    for j, i in enumerate(train + sorted(held)):
        it, prompt = picked[i]
        r = {"id": f"{task.name}-{j:04d}", "split": "train" if j < n_train else "heldout",
             "prompt": prompt, "response": it.response}
        if it.answer is not None and any(c.isalnum() for c in it.answer):
            r["answer"] = it.answer  # ('[]' would normalise to nothing for the exact-match check)
        r["source"] = it.source
        r["_key"] = it.key
        rows.append(r)
    return rows


def existing_texts(out: Path, skip: set[str]) -> tuple[set[str], set[str], set[str]]:
    """(normalised texts, ASCII content keys as build_demo_data uses, task names) of the demo files not
    written by this script."""
    norms, keys = set(), set()
    files = sorted(p for p in list(out.glob("task_*.jsonl")) + list(out.glob("upstream*.jsonl"))
                   if p.name not in skip)
    for p in files:
        for line in p.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            t = r["text"] if "text" in r else r.get("prompt", "") + r.get("response", "")
            norms.add(norm(t))
            keys.add(base.key(t))
    names = set()
    if (out / "tasks.yaml").exists():
        import yaml

        names = {t["name"] for t in yaml.safe_load((out / "tasks.yaml").read_text(encoding="utf-8"))["tasks"]}
    return norms, keys, names


def verify(all_rows: dict[str, list[dict]], old_norms: set[str], old_keys: set[str]) -> list[str]:
    """Independent re-check of the finished rows; any message makes the script exit non-zero."""
    problems, seen = [], {}
    for name, rows in all_rows.items():
        lo, hi = LONG_TOKENS if TASK_CATEGORY[name] == "long_answer" else TOKENS
        splits: dict[str, set[str]] = {"train": set(), "heldout": set()}
        for r in rows:
            t = r["prompt"] + r["response"]
            k = norm(t)
            if k in seen:
                problems.append(f"{r['id']}: same text as {seen[k]}")
            seen[k] = r["id"]
            if k in old_norms or base.key(t) in old_keys:
                problems.append(f"{r['id']}: text already in an existing demo file")
            if not r["prompt"].endswith("\n") or not r["response"].strip():
                problems.append(f"{r['id']}: malformed prompt or response")
            if not lo <= base.ntokens(t) <= hi:
                problems.append(f"{r['id']}: {base.ntokens(t)} tokens, outside {lo}-{hi}")
            splits[r["split"]].add(r["_key"])
        both = sorted(splits["train"] & splits["heldout"])
        if both:
            problems.append(f"{name}: items on both sides of the split: {both[:3]}")
    return problems


TASK_CATEGORY: dict[str, str] = {}


def build(seed: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    old_index = out / INDEX_NAME
    previous: set[str] = set()
    if old_index.exists():
        import yaml

        previous = {t["file"] for t in yaml.safe_load(old_index.read_text(encoding="utf-8"))["tasks"]}
    # built in registry order (which decides who gets a shared number, date or character first), listed
    # by category
    tasks = [fn(random.Random(f"{seed}:{fn.__name__}:items")) for fn in BUILDERS]
    names = [t.name for t in tasks]
    mine = {f"task_{n}.jsonl" for n in names} | previous
    old_norms, old_keys, old_names = existing_texts(out, mine)
    clash = sorted(set(names) & (old_names | {"http_status"}))
    if clash or len(set(names)) != len(names):
        raise SystemExit(f"task names clash with existing tasks: {clash or names}")
    used = set(old_norms)
    claimed: set[str] = set()
    all_rows: dict[str, list[dict]] = {}
    for t in tasks:
        TASK_CATEGORY[t.name] = t.category
        all_rows[t.name] = assemble(t, random.Random(f"{seed}:{t.name}:rows"), used, claimed)
    problems = verify(all_rows, old_norms, old_keys)
    per_cat = {c: sum(t.category == c for t in tasks) for c in CATEGORIES}
    problems += [f"only {per_cat[c]} {c} tasks (want {n})"
                 for c, n in MIN_PER_CATEGORY.items() if per_cat[c] < n]
    if len(tasks) < MIN_TASKS:
        problems.append(f"only {len(tasks)} tasks (want {MIN_TASKS})")
    if problems:
        print("\n".join(problems[:50]), file=sys.stderr)
        raise SystemExit(f"{len(problems)} problems; nothing written")

    tasks = sorted(tasks, key=lambda t: CATEGORIES.index(t.category))
    for stale in sorted(previous - {f"task_{n}.jsonl" for n in names}):
        (out / stale).unlink(missing_ok=True)
    index = []
    for t in tasks:
        rows = [{k: v for k, v in r.items() if k != "_key"} for r in all_rows[t.name]]
        base.write_jsonl(out / f"task_{t.name}.jsonl", rows)
        index.append({
            "name": t.name, "file": f"task_{t.name}.jsonl", "schema": "pair", "family": "instruction",
            "category": t.category, "description": t.description, "source": t.source, "license": t.license,
            "synthetic": t.synthetic, "derived": t.derived,
            "n_train": sum(r["split"] == "train" for r in rows),
            "n_heldout": sum(r["split"] == "heldout" for r in rows),
        })
    write_index(out / INDEX_NAME, index)
    write_sources(out / SOURCES_NAME, tasks, index, all_rows, seed)
    counts: dict[str, int] = {}
    for t in tasks:
        counts[t.category] = counts.get(t.category, 0) + 1
    print(f"wrote {len(index)} instruction tasks to {out}: "
          + ", ".join(f"{c} {counts.get(c, 0)}" for c in CATEGORIES))


def write_index(path: Path, index: list[dict]) -> None:
    import yaml

    header = ("# Index of the instruction-format demo tasks; written by scripts/build_instruction_tasks.py "
              "(do not edit by hand).\n")
    path.write_text(header + yaml.safe_dump({"tasks": index}, sort_keys=False, allow_unicode=True, width=100),
                    encoding="utf-8")


def write_sources(path: Path, tasks: list[Task], index: list[dict], all_rows: dict[str, list[dict]],
                  seed: int) -> None:
    L = [
        "# Instruction-format demo tasks: sources, licenses and how they were made",
        "",
        f"Written by `scripts/build_instruction_tasks.py --seed {seed}` (do not edit by hand; rerun the "
        "script).",
        "Each task is a set of prompt -> response pairs built the way FLAN builds tasks: one source, 3-5",
        "paraphrased prompt templates, one template drawn per item with the seeded RNG. Prompts end with a",
        "newline and responses have no leading space, as in the pair tasks of `tasks.yaml`; `answer` (a",
        "short gold answer for exact match) is given except for the long_answer tasks.",
        "",
        f"- Token windows (prompt + response, no BOS, counted with the {base.TOKENIZER_NAME}):",
        f"  {TOKENS[0]}-{TOKENS[1]} tokens, long_answer tasks {LONG_TOKENS[0]}-{LONG_TOKENS[1]}.",
        f"- Split: each task's items are shuffled with the seed; {N_TRAIN} `train` rows then {N_HELDOUT} "
        "`heldout`",
        f"  rows. Sources with fewer than {N_TRAIN + N_HELDOUT} usable items give the rest to `train` and "
        f"hold out {MIN_HELDOUT}",
        f"  (at least {MIN_TRAIN} train). The split is by item (a country, a number, a word family, a MIME "
        "type), never by",
        "  template, so no held-out item is seen in training under another wording.",
        "- No normalised prompt+response text repeats within or across these tasks, and none equals a text "
        "of",
        "  the existing `task_*.jsonl` / `upstream*.jsonl` files (checked by the script, which exits "
        "non-zero",
        "  otherwise). Tasks over the same kind of thing do not share items: numbers, dates, characters,",
        "  time-zone cities and spelling families are each used by at most one task. Countries are the",
        "  exception: capital_cities, dialling_codes, translate_countries and airport_codes ask different",
        "  facts about (partly) the same countries.",
        "- Not used (other parts of the demo use them): fortunes, the KJV Bible, WordNet, the Jargon File,",
        "  dict-elements, the python3.11-doc library reference, CPython source files, man pages, Perl",
        "  documentation, dict-devil, Tcl library files; nor element facts, HTTP status codes, definitions",
        "  or the arithmetic word problems of `task_arithmetic_synthetic.jsonl`.",
        "- The files keep the licenses of their sources (below), not forgetscope's Apache-2.0.",
        "",
        f"Built with Python {sys.version.split()[0]} (Unicode data {unicodedata.unidata_version}) on Debian; "
        "package versions (`dpkg-query -W`):",
        "",
    ]
    L += [f"- `{p}` {base.pkg_version(p)}" for p in PACKAGES]
    L += [
        "",
        "## Sources and licenses",
        "",
        "- Python standard library tables read at build time (PSF-2.0): `unicodedata` (data of the Unicode",
        "  Character Database, Unicode license), `html.entities.html5` (the WHATWG list of HTML5 named",
        "  character references), `mimetypes.MimeTypes(filenames=())` (the built-in table only; "
        "/etc/mime.types",
        "  is not read), `errno.errorcode` and `os.strerror` (messages of the GNU C library, package "
        "`libc6`),",
        "  `datetime` and `zoneinfo` over the system tz database (package `tzdata`, public domain).",
        "- `wamerican` / `wbritish`: the SCOWL word lists /usr/share/dict/american-english and",
        "  british-english (permissive license, see /usr/share/doc/wamerican/copyright).",
        "- `iso-codes` (LGPL-2.1+): /usr/share/iso-codes/json/iso_3166-1.json, iso_639-2.json, "
        "iso_4217.json and",
        "  the gettext catalogues /usr/share/locale/{fr,de,es}/LC_MESSAGES/iso_3166-1.mo and "
        "{fr,de}/.../iso_639-2.mo.",
        "  Only names and codes (facts) are used.",
        "- `miscfiles` (a GPL-2+ package): /usr/share/misc/countries.gz, airport.gz and inter.phone.gz. Only",
        "  facts are used (a country's capital, an airport's code, a dialling code); no text is copied. The",
        "  tables are old, so a few names and codes are dated.",
        "- `python3.11-doc` (PSF-2.0): the Python FAQ, "
        "/usr/share/doc/python3.11/html/_sources/faq/*.rst.txt;",
        "  human-written answers (the `python_faq` task). The library reference is not used.",
        "- Generated tasks (`synthetic: true`) are filled in by this script from its own templates, with",
        "  answers computed in Python; some draw words from the SCOWL lists (a block list of offensive "
        "words",
        "  removed) and invented names.",
        "",
        "## Tasks",
        "",
        "| task | category | kind | train | held-out | example |",
        "|---|---|---|---|---|---|",
    ]
    for t, ix in zip(tasks, index):
        kind = "generated" if t.synthetic else ("derived" if t.derived else "collected")
        ex = all_rows[t.name][0]
        sample = (ex["prompt"].strip() + " → " + ex["response"]).replace("\n", " ").replace("|", "\\|")
        if len(sample) > 90:
            sample = sample[:87] + "..."
        L.append(f"| `{t.name}` | {t.category} | {kind} | {ix['n_train']} | {ix['n_heldout']} | {sample} |")
    L += [
        "",
        "kind: *collected* = facts or text taken as they are from the source; *derived* = the label or the",
        "pairing is computed from the source (e.g. which word list a spelling is in); *generated* = made up",
        "by the script from templates (`synthetic: true` in the index).",
        "",
        "## Method per task",
        "",
    ]
    for t in tasks:
        L.append(f"- `{t.name}` ({t.category}): {t.description} Source: {t.source}; license: {t.license}. "
                 f"Method: {t.method}. Templates:")
        L += [f"  - `{tp.replace(chr(10), ' / ')}`" for tp in t.templates]
    L.append("")
    path.write_text("\n".join(L), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--approx-tokens", action="store_true",
                    help="estimate token counts from words instead of loading SmolLM2's tokenizer")
    args = ap.parse_args(argv)
    if not args.approx_tokens:
        base.load_tokenizer()
    build(args.seed, args.out)


if __name__ == "__main__":
    main()
