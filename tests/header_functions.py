#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
#
# header_functions.py [HEADER]: the functions include/postcopy.h declares,
# one per line, sorted.  What the ABI checks compare against (the symbols
# of libpostcopy.so, the version script, debian/libpostcopy0.symbols, the
# man pages), so that each of them is checked against the header itself.
import re
import sys

path = sys.argv[1] if len(sys.argv) > 1 else "include/postcopy.h"
text = open(path).read()
text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)  # comments
text = re.sub(r"//[^\n]*", " ", text)
text = re.sub(r"^\s*#.*$", " ", text, flags=re.M)  # preprocessor lines
text = text.replace('extern "C" {', " ")  # its closing brace stays alone
# Brace-enclosed bodies (struct, enum) hold no prototypes of
# ours; drop the inner ones so that only top-level statements are left.
while True:
    t = re.sub(r"\{[^{}]*\}", ";", text)
    if t == text:
        break
    text = t
names = set()
for stmt in text.split(";"):
    s = " ".join(stmt.split())
    if not s or s.startswith("typedef"):
        continue
    m = re.search(r"\b(pc_\w+)\s*\(", s)
    if m:
        names.add(m.group(1))
print("\n".join(sorted(names)))
