#!/usr/bin/env python3
"""Check that the guide in docs/ still matches the code in crates/.

Checks, for every Markdown file in docs/:

1. every ```rust,ignore block appears verbatim in some file under crates/
   (leading and trailing blank lines of the block are ignored, and the block
   may sit at any constant indentation in the source);
2. every relative link resolves to an existing file or directory, and every
   #anchor into a Markdown file names a heading of that file;
3. every snake_case name in backticks that looks like a test or function name
   (`fn name`, or a bare `name` with two or more underscores) exists in the
   source: as `fn name` when the guide says `fn`, otherwise as a word.

Prints one problem per line and exits with status 1 if there are any.
Takes no arguments; runs from the repository root or from docs/.
"""

import os
import re
import sys

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
CRATES = os.path.join(ROOT, "crates")

SOURCE_EXTS = (".rs", ".toml", ".md", ".txt", ".sh", ".py")
SKIP_DIRS = {"target", ".git"}


def read_sources():
    sources = {}
    for dirpath, dirnames, filenames in os.walk(CRATES):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if not name.endswith(SOURCE_EXTS):
                continue
            path = os.path.join(dirpath, name)
            with open(path, encoding="utf-8", errors="replace") as f:
                sources[os.path.relpath(path, ROOT)] = f.read().splitlines()
    return sources


def code_blocks(lines):
    """Yield (info string, first line number, body lines) of fenced blocks."""
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+|~~~+)\s*([^`\s]*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        fence, info, start = m.group(2), m.group(3), i + 1
        body = []
        i += 1
        while i < len(lines) and not re.match(
            r"^\s*" + re.escape(fence[0]) + "{%d,}\\s*$" % len(fence), lines[i]
        ):
            body.append(lines[i])
            i += 1
        yield info, start, body
        i += 1


def trim_blank(body):
    lines = [line.rstrip() for line in body]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def dedent(lines):
    indents = [len(l) - len(l.lstrip(" ")) for l in lines if l.strip()]
    cut = min(indents) if indents else 0
    return [l[cut:] if l.strip() else "" for l in lines]


def found_in(block, src):
    """True if `block` (dedented) occurs in `src` at some constant indent."""
    n = len(block)
    first = block[0]
    for i in range(len(src) - n + 1):
        line = src[i].rstrip()
        if not line.endswith(first) or line[: len(line) - len(first)].strip():
            continue
        indent = line[: len(line) - len(first)]
        ok = True
        for j in range(1, n):
            want = block[j]
            have = src[i + j].rstrip()
            if want == "":
                if have.strip():
                    ok = False
                    break
            elif have != indent + want:
                ok = False
                break
        if ok:
            return True
    return False


def best_partial(block, sources):
    """Name the file and block line where the longest verbatim prefix stops."""
    best = (0, None)
    for path, src in sources.items():
        for k in range(len(block), best[0], -1):
            if found_in(block[:k], src):
                best = (k, path)
                break
    return best


def slug(heading):
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[*_]{1,2}([^*_]+)[*_]{1,2}", r"\1", text)
    out = []
    for ch in text.strip():
        if ch.isalnum() or ch in "_-":
            out.append(ch.lower())
        elif ch.isspace():
            out.append("-")
    return "".join(out)


def anchors_of(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    fenced = set()
    for _, start, body in code_blocks(lines):
        fenced.update(range(start - 1, start + len(body) + 1))
    result = set()
    for n, line in enumerate(lines):
        if n in fenced:
            continue
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            result.add(slug(m.group(1)))
    return result


def prose_lines(lines):
    """Lines outside fenced code blocks, with their 1-based numbers."""
    inside = False
    fence = None
    for n, line in enumerate(lines, 1):
        m = re.match(r"^\s*(```+|~~~+)", line)
        if m:
            if not inside:
                inside, fence = True, m.group(1)
            elif line.strip().startswith(fence):
                inside = False
            continue
        if not inside:
            yield n, line


def main():
    sources = read_sources()
    words = set()
    fns = set()
    for src in sources.values():
        text = "\n".join(src)
        words.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
        fns.update(re.findall(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)", text))

    problems = []
    docs = sorted(f for f in os.listdir(DOCS) if f.endswith(".md"))
    anchor_cache = {}
    for doc in docs:
        rel_doc = os.path.join("docs", doc)
        with open(os.path.join(DOCS, doc), encoding="utf-8") as f:
            lines = f.read().splitlines()

        # 1. excerpts
        for info, start, body in code_blocks(lines):
            if info != "rust,ignore":
                continue
            block = dedent(trim_blank(body))
            if not block:
                continue
            if any(found_in(block, src) for src in sources.values()):
                continue
            k, path = best_partial(block, sources)
            if path:
                where = "first %d lines match %s; line %d differs: %r" % (
                    k, path, start + 1 + k, block[k].strip())
            else:
                where = "first line not found: %r" % block[0].strip()
            problems.append("%s:%d: excerpt not found in crates/ (%s)"
                            % (rel_doc, start, where))

        for n, line in prose_lines(lines):
            # 2. relative links (inline code spans are not links)
            plain = re.sub(r"`[^`]*`", "", line)
            for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", plain):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                    continue  # http:, https:, mailto:
                path, _, anchor = target.partition("#")
                full = os.path.join(DOCS, path) if path else os.path.join(DOCS, doc)
                full = os.path.normpath(full)
                if not os.path.exists(full):
                    problems.append("%s:%d: dead link %s" % (rel_doc, n, target))
                    continue
                if anchor and full.endswith(".md"):
                    if full not in anchor_cache:
                        anchor_cache[full] = anchors_of(full)
                    if anchor not in anchor_cache[full]:
                        problems.append("%s:%d: dead anchor %s" % (rel_doc, n, target))

            # 3. function and test names
            for code in re.findall(r"`([^`]+)`", line):
                m = re.match(r"^(?:async\s+)?fn\s+([a-z_][a-z0-9_]*)", code)
                if m:
                    if m.group(1) not in fns:
                        problems.append("%s:%d: no `fn %s` in crates/"
                                        % (rel_doc, n, m.group(1)))
                    continue
                m = re.match(r"^([a-z][a-z0-9]*(?:_[a-z0-9]+){2,})(?:\(\))?$", code)
                if m and m.group(1) not in words:
                    problems.append("%s:%d: name `%s` not found in crates/"
                                    % (rel_doc, n, m.group(1)))

    def order(problem):
        path, line, _ = problem.split(":", 2)
        return (path, int(line))

    problems.sort(key=order)
    for p in problems:
        print(p)
    if problems:
        print("%d problem(s)" % len(problems))
        return 1
    print("docs: all rust,ignore excerpts, links and names check out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
