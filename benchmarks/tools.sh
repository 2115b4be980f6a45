#!/usr/bin/env bash
# Install the tools dvs is compared against, into a scratch prefix (never the project's venv).
#
#   bash benchmarks/tools.sh            # install (idempotent), then print versions
#   bash benchmarks/tools.sh --check    # only verify each tool on a tiny folder + print versions
#   DVS_BENCH_TOOLS=/some/dir bash benchmarks/tools.sh
#
# Layout of the prefix:
#   venv/        a separate Python venv: dvc, oxenai (Oxen's Python bindings), git-annex
#                (PyPI ships a static git-annex binary behind a tiny Python launcher)
#   lfs/         git-lfs, unpacked from Debian's .deb (apt-get download + dpkg -x; optional)
#   home/        HOME for the competitor runs: git/dvc/oxen user config lives here, not in ~
#   env.sh       `source` it to get PATH/HOME/DVC_NO_ANALYTICS as the benchmark uses them
#
# oxenai ships only Python bindings (oxen/oxen_py.abi3.so), no `oxen` CLI binary; the benchmark
# drives init/add/commit through oxen.Repo in a subprocess.
set -euo pipefail

PREFIX="${DVS_BENCH_TOOLS:-/work/scratch/bench-tools}"
PY="${DVS_BENCH_PYTHON:-python3}"
CHECK_ONLY=0
[[ "${1:-}" == "--check" ]] && CHECK_ONLY=1

mkdir -p "$PREFIX" "$PREFIX/home"
PREFIX="$(cd "$PREFIX" && pwd)"

if [[ $CHECK_ONLY == 0 ]]; then
  # 1. Python tools in their own venv.
  if [[ ! -x "$PREFIX/venv/bin/python" ]]; then
    "$PY" -m venv "$PREFIX/venv"
    "$PREFIX/venv/bin/pip" install -q -U pip
  fi
  want=(dvc oxenai git-annex)
  missing=()
  for p in "${want[@]}"; do
    "$PREFIX/venv/bin/pip" show -q "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "installing into $PREFIX/venv: ${missing[*]}"
    "$PREFIX/venv/bin/pip" install -q "${missing[@]}" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
  fi

  # 2. git-lfs (optional): Debian's package, unpacked into the prefix, not installed system-wide.
  if [[ ! -x "$PREFIX/lfs/usr/bin/git-lfs" ]]; then
    if command -v apt-get >/dev/null 2>&1; then
      tmp="$(mktemp -d)"
      if (cd "$tmp" && apt-get download git-lfs >/dev/null 2>&1) ||
         { apt-get update -qq >/dev/null 2>&1 && (cd "$tmp" && apt-get download git-lfs >/dev/null 2>&1); }; then
        dpkg -x "$tmp"/git-lfs_*.deb "$PREFIX/lfs"
      else
        echo "git-lfs: could not download Debian's package; skipping (optional)" >&2
      fi
      rm -rf "$tmp"
    fi
  fi
fi

# 3. The environment the benchmark runs competitors in.
cat >"$PREFIX/env.sh" <<EOF
export PATH="$PREFIX/venv/bin:$PREFIX/lfs/usr/bin:\$PATH"
export HOME="$PREFIX/home"
export XDG_CONFIG_HOME="$PREFIX/home/.config"
export DVC_NO_ANALYTICS=1
export GIT_CONFIG_NOSYSTEM=1
EOF
# shellcheck disable=SC1091
source "$PREFIX/env.sh"

# Identity for commits, and no background `git gc --auto` (it would detach and steal CPU from
# the next timed run; it is a deferred cost, so leaving it out favours the git-based tools).
git config --global user.name bench
git config --global user.email bench@example.invalid
git config --global init.defaultBranch main
git config --global gc.auto 0
git config --global advice.detachedHead false
dvc config --global core.analytics false >/dev/null 2>&1 || true
dvc config --global core.check_update false >/dev/null 2>&1 || true
"$PREFIX/venv/bin/python" - <<'EOF'
import oxen
oxen.user.config_user("bench", "bench@example.invalid")
EOF

# 4. Verify each tool on a tiny folder.
t="$(mktemp -d)"
trap 'rm -rf "$t"' EXIT
mkfiles() { mkdir -p "$1/d/sub"; for i in 1 2 3; do echo "file $i" >"$1/d/f$i"; done; echo x >"$1/d/sub/g"; }
ok() { printf '  %-10s ok\n' "$1"; }

echo "verifying on a tiny folder ($t):"
mkfiles "$t/git"; (cd "$t/git" && git init -q && git add -A && git commit -q -m x &&
  [[ $(git ls-files | wc -l) == 4 ]]) && ok git
mkfiles "$t/annex"; (cd "$t/annex" && git init -q && git annex init -q >/dev/null 2>&1 &&
  git annex add . >/dev/null 2>&1 && git commit -q -m x &&
  [[ $(git annex find | wc -l) == 4 ]]) && ok git-annex
mkfiles "$t/dvc"; (cd "$t/dvc" && git init -q && dvc init -q && dvc add -q d &&
  git add d.dvc .gitignore && git commit -q -m x &&
  [[ $(find .dvc/cache/files -type f ! -name '*.dir' | wc -l) == 4 ]]) && ok dvc
mkfiles "$t/oxen"; (cd "$t/oxen" && "$PREFIX/venv/bin/python" -c '
import oxen
r = oxen.Repo("."); r.init(); r.add("d"); r.commit("x")
' >/dev/null && [[ $(find .oxen/versions -type f -name data | wc -l) == 4 ]]) && ok oxen
if command -v git-lfs >/dev/null 2>&1; then
  mkfiles "$t/lfs"; (cd "$t/lfs" && git init -q && git lfs install --local >/dev/null &&
    git lfs track 'd/**' >/dev/null && git add -A && git commit -q -m x &&
    [[ $(git lfs ls-files | wc -l) == 4 ]]) && ok git-lfs
fi

echo "versions:"
echo "  git       $(git --version | awk '{print $3}')"
echo "  git-annex $(git annex version --raw 2>/dev/null || git annex version | head -1)"
echo "  dvc       $(dvc --version)"
echo "  oxenai    $("$PREFIX/venv/bin/python" -c 'import importlib.metadata as m; print(m.version("oxenai"))')"
command -v git-lfs >/dev/null 2>&1 && echo "  git-lfs   $(git lfs version | awk '{print $1}' | cut -d/ -f2)"
echo "prefix: $PREFIX (source $PREFIX/env.sh to use them by hand)"
