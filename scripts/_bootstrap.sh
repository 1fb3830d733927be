# Sourced by scripts/run and scripts/test: make the virtualenv for
# DJANGO_VERSION and install the pinned requirements, reinstalling only when a
# requirements file changed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# DJANGO_VERSION picks the Django and so the Python and the virtualenv:
#   5.2 (default, the LTS): Python 3.11, .venv, requirements.txt
#   6.1:                    Python 3.12 or 3.13, .venv-django61, requirements-django61.txt
DJANGO_VERSION="${DJANGO_VERSION:-5.2}"
case "$DJANGO_VERSION" in
  5.2) venv=.venv; requirements=requirements.txt; pythons="3.11" ;;
  6.1) venv=.venv-django61; requirements=requirements-django61.txt; pythons="3.12 3.13" ;;
  *) echo "DJANGO_VERSION must be 5.2 or 6.1 (got $DJANGO_VERSION)" >&2; exit 1 ;;
esac

python_version() {  # "3.12" if $1 runs (a pyenv shim of an inactive version does not)
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}
if [ -z "${PYTHON:-}" ]; then
  for version in $pythons; do
    for candidate in "python$version" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$version".*/bin/"python$version"; do
      if [ "$(python_version "$candidate")" = "$version" ]; then PYTHON=$candidate; break 2; fi
    done
  done
fi
found=$(python_version "${PYTHON:-python3}" || true)
if [ -z "$found" ] || [[ " $pythons " != *" $found "* ]]; then
  echo "transactional with Django $DJANGO_VERSION needs Python ${pythons// / or } (found ${found:-none});" \
    "set PYTHON=/path/to/python${pythons%% *}" >&2
  exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "Creating $venv with $("$PYTHON" --version) for Django $DJANGO_VERSION"
  "$PYTHON" -m venv "$venv"
fi

stamp=$venv/.requirements.sha256
wanted=$(cat requirements-common.txt "$requirements" requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing $requirements and requirements-dev.txt into $venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$requirements" -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

# Variables from .env (if present) reach every process these scripts start;
# a variable already set in the shell wins over .env.
if [ -f .env ]; then
  shell_env=$(export -p)
  set -a
  # shellcheck disable=SC1091
  . ./.env
  set +a
  eval "$shell_env"
fi

export PATH="$PWD/$venv/bin:$PATH"
