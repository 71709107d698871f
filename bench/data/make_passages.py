"""Rebuild passages.jsonl: real technical prose from this Python's standard-library docstrings (PSF licence).

Paragraphs of 350-900 characters, no doctest examples, shuffled with a fixed seed.
"""

from __future__ import annotations

import importlib
import inspect
import json
import random
import re
from pathlib import Path

MODULES = """json csv argparse logging subprocess threading collections itertools functools pathlib shutil tempfile
textwrap difflib heapq bisect zlib gzip tarfile zipfile sqlite3 email http.client urllib.request
xml.etree.ElementTree unittest doctest pickle copy decimal fractions statistics random datetime calendar string
struct socket selectors asyncio contextlib abc enum dataclasses typing inspect ast dis tokenize traceback warnings
weakref hashlib hmac secrets base64 binascii codecs locale gettext shlex glob fnmatch sched queue multiprocessing
concurrent.futures signal mmap io os sys time math cmath operator pprint reprlib timeit trace pdb cProfile platform
errno ctypes uuid ipaddress mimetypes smtplib imaplib ftplib poplib html.parser configparser netrc plistlib wave
colorsys graphlib zoneinfo tomllib numbers array filecmp fileinput stat linecache keyword symtable pkgutil runpy
site sysconfig builtins gc atexit""".split()


def documented(module):
    yield module
    for name in sorted(dir(module)):
        if not name.startswith("_"):
            yield getattr(module, name)


def main() -> None:
    seen: set[str] = set()
    rows = []
    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for obj in documented(module):
            if not (inspect.ismodule(obj) or inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            for para in re.split(r"\n\s*\n", inspect.getdoc(obj) or ""):
                text = " ".join(para.split())
                if 350 <= len(text) <= 900 and text not in seen and ">>>" not in text:
                    seen.add(text)
                    rows.append({"source": f"{name}:{getattr(obj, '__name__', name)}", "text": text})
    random.Random(0).shuffle(rows)
    out = Path(__file__).with_name("passages.jsonl")
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} passages → {out}")


if __name__ == "__main__":
    main()
