#!/usr/bin/env python3
"""check_dockerfile.py: static checks of deploy/Dockerfile, for tests/integration/k8s_manifests_test.sh.

There is no Docker engine (and no hadolint) where the tests run, so the Dockerfile is never built
there; this catches what can be caught without building it. Python 3 standard library only.

  python3 check_dockerfile.py REPO_ROOT [CELLSERVE_BINARY]

Checks:
  - it parses: instructions, line continuations, comments; the stages (FROM ... AS name) are
    unique, `COPY --from=` names an earlier stage, and the default (last) stage is `cpu`;
  - every COPY/ADD source from the build context exists in the repository and is not excluded by
    deploy/Dockerfile.dockerignore; no ADD of URLs, no curl/wget/git/pip/npm in RUN: only
    apt-get installs (with --no-install-recommends, after apt-get update, lists removed);
  - the build stage installs every -dev package of cellserve.sh's PACKAGES (its build
    dependencies) but the fuzzers' clang runtime;
  - each build stage (build, cuda-build) COPYs every folder the top-level CMakeLists.txt adds
    with add_subdirectory or names as ${PROJECT_SOURCE_DIR}/FOLDER/ (a folder added later and not
    copied fails the configure or the build step);
  - the runtime stages (cpu, cuda) run as a numeric non-root USER, have ENTRYPOINT
    ["cellserve"], EXPOSE 7410 and 9410, a HEALTHCHECK with `cellserve health`, and install
    cellserve-model-repo (the initContainer's command in deploy/k8s);
  - with CELLSERVE_BINARY, on a Debian system: every shared library it links (ldd) belongs to a
    package the cpu stage installs, or to one of their dependencies (dpkg), or to the base image
    (libc6, libstdc++6, libgcc-s1). So a new library linked by the build shows up here, not in a
    container that fails to start.
Exit status 0 when all pass; 1 and one line per problem otherwise.
"""
import fnmatch
import json
import os
import re
import shlex
import subprocess
import sys

BASE_IMAGE_PACKAGES = {"libc6", "libstdc++6", "libgcc-s1"}
RUNTIME_STAGES = ("cpu", "cuda")


def parse(path):
    """Returns [(line_number, INSTRUCTION, rest)] with continuations joined."""
    out, buf, start = [], "", 0
    with open(path, encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue  # comment lines inside a continued instruction are dropped, as Docker does
            if not buf:
                start = n
            if line.endswith("\\"):
                buf += line[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((start, word.upper(), rest.strip()))
            buf = ""
    return out


def split_flags(rest):
    """'--from=x --chmod=0755 a b' -> ({'from': 'x', 'chmod': '0755'}, ['a', 'b'])"""
    if rest.startswith("["):
        return {}, json.loads(rest)
    flags, args = {}, []
    for tok in shlex.split(rest):
        if tok.startswith("--") and not args:
            k, _, v = tok[2:].partition("=")
            flags[k] = v
        else:
            args.append(tok)
    return flags, args


def dockerignore_patterns(path):
    if not os.path.exists(path):
        return []
    pats = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                pats.append(line.rstrip("/"))
    return pats


def ignored(rel, patterns):
    parts = rel.strip("/").split("/")
    for pat in patterns:
        if pat.startswith("!"):
            continue
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if fnmatch.fnmatch(prefix, pat) or (pat.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pat[3:])):
                return True
    return False


def cellserve_sh_packages(root):
    text = open(os.path.join(root, "cellserve.sh"), encoding="utf-8").read()
    m = re.search(r"^PACKAGES=\((.*?)^\)", text, re.S | re.M)
    if not m:
        return None
    body = "\n".join(line.split("#")[0] for line in m.group(1).splitlines())
    return body.split()


def cmake_top_folders(root):
    """The first path component of every add_subdirectory(...) in the top-level CMakeLists.txt, and
    of every ${PROJECT_SOURCE_DIR}/FOLDER/ it names (a script or header list the build reads)."""
    text = open(os.path.join(root, "CMakeLists.txt"), encoding="utf-8").read()
    text = "\n".join(line.split("#")[0] for line in text.splitlines())
    folders = {m.split("/")[0] for m in re.findall(r"add_subdirectory\(\s*([^\s)]+)", text)}
    folders |= set(re.findall(r"\$\{PROJECT_SOURCE_DIR\}/([A-Za-z0-9_.-]+)/", text))
    return sorted(folders)


def apt_packages(run):
    """Packages named by `apt-get install` in one RUN command."""
    pkgs = []
    for part in re.split(r"&&|;", run):
        toks = part.split()
        if "apt-get" in toks and "install" in toks:
            pkgs += [t for t in toks[toks.index("install") + 1:] if not t.startswith("-")]
    return pkgs


def dpkg_owners(paths):
    """{path: package} for the paths dpkg knows (one dpkg -S call; usrmerge: /lib = /usr/lib)."""
    variants = {}
    for path in paths:
        for p in {path, os.path.realpath(path)}:
            for v in (p, p[4:] if p.startswith("/usr/lib/") else "/usr" + p if p.startswith("/lib/") else p):
                variants.setdefault(v, path)
    r = subprocess.run(["dpkg", "-S", *sorted(variants)], capture_output=True, text=True)
    owners = {}
    for line in r.stdout.splitlines():
        pkg, _, file = line.partition(": ")
        if file in variants:
            owners[variants[file]] = pkg.split(",")[0].split(":")[0].strip()
    return owners


def dependency_closure(packages):
    """`packages` and the installed packages they depend on, recursively (one dpkg-query call).
    A virtual package (libblas.so.3, ...) counts through the installed packages providing it."""
    r = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Depends}\t${Pre-Depends}\t${Provides}\n"],
                       capture_output=True, text=True)

    def names(field):  # "a (>= 1) | b, c:any" -> ["a", "b", "c"]
        return [alt.strip().split(" ")[0].split(":")[0] for dep in field.split(",") for alt in dep.split("|")
                if alt.strip()]

    deps, providers = {}, {}
    for line in r.stdout.splitlines():
        pkg, depends, pre, provides = (line.split("\t") + ["", "", ""])[:4]
        deps[pkg] = names(depends) + names(pre)
        for v in names(provides):
            providers.setdefault(v, []).append(pkg)
    seen, todo = set(), list(packages)
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        todo += deps.get(p, []) + providers.get(p, [])
    return seen


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[4], file=sys.stderr)
        return 2
    root = sys.argv[1]
    binary = sys.argv[2] if len(sys.argv) == 3 else None
    dockerfile = os.path.join(root, "deploy", "Dockerfile")
    problems = []
    bad = problems.append

    instrs = parse(dockerfile)
    with open(dockerfile, encoding="utf-8") as f:
        if not f.readline().startswith("# syntax=docker/dockerfile:1"):
            bad("the first line must be '# syntax=docker/dockerfile:1' (COPY --chmod needs it)")
    patterns = dockerignore_patterns(os.path.join(root, "deploy", "Dockerfile.dockerignore"))
    if not patterns:
        bad("deploy/Dockerfile.dockerignore is missing or empty")
    for must in (".git", "build", "build-*"):
        if patterns and must not in patterns:
            bad(f"Dockerfile.dockerignore should exclude {must}")

    stages = {}  # name -> list of (line, instr, rest)
    order = []
    current = None
    for line, instr, rest in instrs:
        if instr == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
            if not m or not m.group(2):
                bad(f"line {line}: every FROM needs 'AS name'")
                continue
            current = m.group(2).lower()
            if current in stages:
                bad(f"line {line}: stage {current} defined twice")
            stages[current] = []
            order.append(current)
            continue
        if current is None:
            if instr != "ARG":
                bad(f"line {line}: {instr} before the first FROM")
            continue
        stages[current].append((line, instr, rest))
    if not order or order[-1] != "cpu":
        bad("the last stage (the default target) must be cpu")
    for name in ("build", "cpu", "cuda-build", "cuda"):
        if name not in stages:
            bad(f"no stage named {name}")

    for i, name in enumerate(order):
        for line, instr, rest in stages[name]:
            if instr == "ADD":
                bad(f"line {line}: use COPY, not ADD")
            if instr in ("COPY", "ADD"):
                flags, args = split_flags(rest)
                srcs = args[:-1]
                if not srcs:
                    bad(f"line {line}: COPY needs a source and a destination")
                if "from" in flags:
                    if flags["from"].lower() not in order[:i]:
                        bad(f"line {line}: COPY --from={flags['from']} names no earlier stage")
                    continue
                for src in srcs:
                    if "://" in src:
                        bad(f"line {line}: no downloads: {src}")
                        continue
                    full = os.path.join(root, src)
                    if not os.path.exists(full):
                        bad(f"line {line}: COPY source {src} does not exist in the repository")
                    elif ignored(src, patterns):
                        bad(f"line {line}: COPY source {src} is excluded by Dockerfile.dockerignore")
            if instr == "RUN":
                for tool in ("curl", "wget", "git clone", "pip install", "npm install", "npx"):
                    if re.search(rf"(^|[\s;&|]){re.escape(tool)}(\s|$)", rest):
                        bad(f"line {line}: no downloads other than Debian/Ubuntu packages ({tool})")
                if re.search(r"apt-get\s+install", rest):
                    if "--no-install-recommends" not in rest:
                        bad(f"line {line}: apt-get install without --no-install-recommends")
                    if not re.search(r"apt-get\s+update", rest.split("install")[0]):
                        bad(f"line {line}: apt-get update must come first in the same RUN")
                    if "rm -rf /var/lib/apt/lists/*" not in rest:
                        bad(f"line {line}: remove /var/lib/apt/lists/* in the same RUN")

    def stage_apt(name):
        return [p for _, instr, rest in stages.get(name, []) if instr == "RUN" for p in apt_packages(rest)]

    wanted = cellserve_sh_packages(root)
    if wanted is None:
        bad("cannot find PACKAGES=( ... ) in cellserve.sh")
    else:
        for stage in ("build", "cuda-build"):
            have = set(stage_apt(stage))
            for p in wanted:
                if p.endswith("-dev") and not p.startswith("libclang-rt") and p not in have:
                    bad(f"stage {stage} does not install {p} (a build dependency in cellserve.sh)")

    needed = cmake_top_folders(root)
    for stage in ("build", "cuda-build"):
        copied = set()
        for _, instr, rest in stages.get(stage, []):
            if instr == "COPY" and "from" not in split_flags(rest)[0]:
                copied |= {src.strip("/").split("/")[0] for src in split_flags(rest)[1][:-1]}
        for folder in needed:
            if folder not in copied:
                bad(f"stage {stage} does not COPY {folder}/ (CMakeLists.txt adds or reads it)")

    for name in RUNTIME_STAGES:
        body = stages.get(name, [])
        users = [rest for _, instr, rest in body if instr == "USER"]
        if not users or not re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", users[-1]):
            bad(f"stage {name}: the last USER must be a numeric non-root uid (runAsNonRoot)")
        entry = [rest for _, instr, rest in body if instr == "ENTRYPOINT"]
        if not entry or json.loads(entry[-1]) != ["cellserve"]:
            bad(f'stage {name}: ENTRYPOINT must be ["cellserve"]')
        exposed = {p for _, instr, rest in body if instr == "EXPOSE" for p in rest.split()}
        for port in ("7410", "9410"):
            if port not in exposed:
                bad(f"stage {name}: EXPOSE {port}")
        health = [rest for _, instr, rest in body if instr == "HEALTHCHECK"]
        if not health or "cellserve" not in health[-1] or "health" not in health[-1]:
            bad(f"stage {name}: HEALTHCHECK must run cellserve health")
        dests = [split_flags(rest)[1][-1] for _, instr, rest in body if instr == "COPY"]
        if "/usr/local/bin/cellserve-model-repo" not in dests:
            bad(f"stage {name}: must install /usr/local/bin/cellserve-model-repo (deploy/model-repo.sh)")

    if binary and os.path.exists("/usr/bin/dpkg"):
        installed = set(stage_apt("cpu"))
        allowed = dependency_closure(installed | BASE_IMAGE_PACKAGES)
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
        # A build with the CUDA backend also links CUDA's own libraries; the cpu stage is built
        # with -DCELLSERVE_CUDA=OFF and never links them, so they are not its business.
        libs = [lib for lib in re.findall(r"=>\s+(/\S+)", out) if not lib.startswith("/usr/local/cuda")]
        owners = dpkg_owners(libs)
        for lib in libs:
            owner = owners.get(lib)
            if owner is None:
                bad(f"{lib} (linked by {binary}) belongs to no Debian package")
            elif owner not in allowed:
                bad(f"{lib} (package {owner}) is linked by {binary} but not installed by the cpu stage")
        if not any(binary in p for p in problems):
            print(f"check_dockerfile.py: the {len(libs)} libraries {os.path.basename(binary)} links all come from the "
                  f"cpu stage's packages ({', '.join(sorted(installed))}) or the base image")
    elif binary:
        print("check_dockerfile.py: no dpkg here: the runtime library check is skipped")

    for p in problems:
        print(f"deploy/Dockerfile: {p}")
    if problems:
        return 1
    print(f"check_dockerfile.py: deploy/Dockerfile: {len(order)} stages ({', '.join(order)}) pass")
    return 0


if __name__ == "__main__":
    sys.exit(main())
