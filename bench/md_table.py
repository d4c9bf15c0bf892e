#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Put a table into a Markdown file between its markers
`<!-- NAME:begin ... -->` and `<!-- NAME:end -->`; the prose around them is
written by hand.  usage: md_table.py FILE NAME TABLE_FILE"""
import sys


def rewrite(md, name, table):
    text = open(md).read()
    begin = text.index("<!-- %s:begin" % name)
    begin = text.index("\n", begin) + 1
    end = text.index("<!-- %s:end -->" % name)
    open(md, "w").write(text[:begin] + table.rstrip("\n") + "\n" + text[end:])


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: md_table.py FILE NAME TABLE_FILE")
    rewrite(sys.argv[1], sys.argv[2], open(sys.argv[3]).read())
