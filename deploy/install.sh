#!/usr/bin/env bash
# Install the layerfed agent on this device as a systemd service, from the source tree this script sits in.
# Idempotent: run it again to upgrade (it reinstalls the program, keeps the configuration, the key and
# the state). Raspberry Pi OS / Debian 12 and Ubuntu on aarch64 (Raspberry Pi 4/5, Jetson), or x86_64.
#
#   sudo deploy/install.sh                        install or upgrade
#   sudo deploy/install.sh --dry-run              say what it would do; change nothing
#   sudo deploy/install.sh --uninstall            remove service, program and user; keep state, key, config
#   sudo deploy/install.sh --uninstall --purge    ... and remove the state, the key and the configuration
#
# Options:
#   --prefix DIR          where the program goes (default /opt/layerfed; the virtual environment is DIR/venv)
#   --root DIR            install into DIR instead of / (tests, image staging): DIR/etc/layerfed,
#                         DIR/var/lib/layerfed, DIR/etc/systemd/system, DIR<prefix>; no user is created and
#                         systemctl is not called. Runs without root privileges (files stay yours).
#   --user NAME           service user (default layerfed)
#   --python-from VENV    skip `pip install`: link <prefix>/venv to an existing virtual environment that
#                         already has layerfed installed (development machines, tests)
#   --architecture ARCH   use ARCH instead of `uname -m` to choose the torch wheels (tests)
#
# Exit codes: 0 done, 64 bad usage, 69 this platform cannot run the agent, 78 a configuration mistake.
set -euo pipefail

SOURCE_DIRECTORY="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly SOURCE_DIRECTORY
readonly CONFIG_DIRECTORY=/etc/layerfed
readonly STATE_DIRECTORY=/var/lib/layerfed
readonly UNIT_DIRECTORY=/etc/systemd/system
readonly UNIT_NAME=layerfed-agent.service
readonly COMMAND_LINK=/usr/local/bin/layerfed
readonly MEMORY_LIMIT_PATTERN='^([0-9]+[KMGT]?|[0-9]+(\.[0-9]+)?%|infinity)$'

root=/
prefix=/opt/layerfed
service_user=layerfed
python_from=""
architecture="$(uname -m)"
dry_run=false
action=install
purge=false
device_address=""

say() { printf 'install.sh: %s\n' "$*"; }
die() {
  local code=$1
  shift
  printf 'install.sh: %s\n' "$*" >&2
  exit "$code"
}
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --root) root="${2:?--root needs a directory}"; shift 2 ;;
    --user) service_user="${2:?--user needs a name}"; shift 2 ;;
    --python-from) python_from="${2:?--python-from needs a virtual environment}"; shift 2 ;;
    --architecture) architecture="${2:?--architecture needs a name}"; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    --uninstall) action=uninstall; shift ;;
    --purge) purge=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die 64 "unknown option $1" ;;
  esac
done

case "$prefix" in /*) ;; *) die 64 "--prefix must be an absolute path, not $prefix" ;; esac
case "$root" in /*) ;; *) root="$(pwd)/$root" ;; esac
if [ "$purge" = true ] && [ "$action" != uninstall ]; then die 64 "--purge goes with --uninstall"; fi
if [ -n "$python_from" ]; then
  python_from="$(cd "$python_from" 2>/dev/null && pwd)" || die 64 "--python-from: no such directory"
  [ -x "$python_from/bin/layerfed" ] || die 64 "--python-from: $python_from/bin/layerfed is missing"
fi

# Where a target path lands on this machine's file system: under --root, or as is.
staged() { printf '%s%s' "${root%/}" "$1"; }
is_system_root() { [ "$root" = / ]; }
is_superuser() { [ "$(id -u)" -eq 0 ]; }
systemd_running() { is_system_root && [ -d /run/systemd/system ]; }

# --------------------------------------------------------------------------------------- changing things

# Every change is announced with `change` and made with `run`, so --dry-run says what it would do and
# does nothing.
change() {
  if [ "$dry_run" = true ]; then
    say "would $*"
  else
    say "$*"
  fi
}

run() {
  if [ "$dry_run" = false ]; then
    "$@"
  fi
}

can_chown() { is_superuser && getent passwd "$service_user" >/dev/null; }

# set_owner PATH OWNER GROUP: chown when this process may and the owner exists here; quiet if already so.
set_owner() {
  local path=$1 owner=$2 group=$3
  can_chown || return 0
  if [ "$dry_run" = true ] && [ ! -e "$path" ]; then return 0; fi
  if [ "$(stat -c %U:%G "$path")" != "$owner:$group" ]; then
    change "give $path to $owner:$group"
    run chown "$owner:$group" "$path"
  fi
}

set_mode() {
  local path=$1 mode=$2
  if [ "$dry_run" = true ] && [ ! -e "$path" ]; then return 0; fi
  if [ "$(stat -c %a "$path")" != "$mode" ]; then
    change "set the mode of $path to $mode"
    run chmod "$mode" "$path"
  fi
}

# ensure_directory PATH MODE OWNER GROUP
ensure_directory() {
  local path=$1 mode=$2 owner=$3 group=$4
  if [ ! -d "$path" ]; then
    change "create $path"
    run mkdir -p "$path"
  fi
  set_mode "$path" "$mode"
  set_owner "$path" "$owner" "$group"
}

# install_content DESTINATION MODE OWNER GROUP < CONTENT: write only when the content differs.
install_content() {
  local destination=$1 mode=$2 owner=$3 group=$4 temporary
  temporary="$(mktemp)"
  cat >"$temporary"
  if [ -f "$destination" ] && cmp -s "$temporary" "$destination"; then
    rm -f "$temporary"
  else
    change "write $destination"
    if [ "$dry_run" = true ]; then
      rm -f "$temporary"
      return 0
    fi
    chmod "$mode" "$temporary"
    mv -f "$temporary" "$destination"
  fi
  set_mode "$destination" "$mode"
  set_owner "$destination" "$owner" "$group"
}

remove() {
  local path
  for path in "$@"; do
    if [ -e "$path" ] || [ -L "$path" ]; then
      change "remove $path"
      run rm -rf -- "$path"
    fi
  done
}

# ---------------------------------------------------------------------------------------------- platform

torch_requirements() {
  case "$architecture" in
    aarch64 | arm64) echo "torch==2.9.1 torchvision==0.24.1" ;;   # CPU builds on PyPI
    x86_64 | amd64) echo "torch==2.14.1 torchvision==0.29.1" ;;   # PyPI's is a CUDA build; runs on the CPU
    *) die 69 "no torch wheels on PyPI for $architecture: use a 64-bit OS (aarch64 or x86_64)" ;;
  esac
}

# The training backend written into a new configuration: torch, which has wheels on every architecture.
# "ort" (onnxruntime-training, deprecated upstream, x86_64 with Python 3.10-3.12 only) is opt-in: install
# the extra into the venv (pip install "layerfed[ort]") and set [agent] backend = "ort".
training_backend() { echo torch; }

check_python() {
  command -v python3 >/dev/null || die 69 "python3 is missing: apt-get install -y python3 python3-venv"
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    die 69 "layerfed needs Python 3.10 or newer, this is $(python3 --version 2>&1)"
  python3 -c 'import ensurepip, venv' 2>/dev/null ||
    die 69 "python3 cannot make virtual environments: apt-get install -y python3-venv"
}

# ------------------------------------------------------------------------------------------------ steps

create_user() {
  if getent passwd "$service_user" >/dev/null; then
    return 0
  fi
  if ! is_system_root; then
    say "not creating user $service_user: --root is set (the user database belongs to the target system)"
  elif ! is_superuser; then
    say "not creating user $service_user: not running as root"
  else
    change "create the system user $service_user"
    run useradd --system --user-group --home-dir "$STATE_DIRECTORY" --no-create-home \
      --shell /usr/sbin/nologin --comment "layerfed agent" "$service_user"
  fi
}

explain_ownership() {
  if ! is_superuser; then
    say "not changing owners: not running as root (the files stay owned by $(id -un))"
  elif ! getent passwd "$service_user" >/dev/null; then
    say "not changing owners: user $service_user does not exist on this machine"
  fi
}

install_program() {
  local venv
  venv="$(staged "$prefix")/venv"
  ensure_directory "$(staged "$prefix")" 755 root root
  if [ -n "$python_from" ]; then
    if [ -d "$venv" ] && [ ! -L "$venv" ]; then
      die 64 "$venv is a virtual environment already; remove it or leave out --python-from"
    fi
    if [ "$(readlink "$venv" || true)" != "$python_from" ]; then
      change "link $venv to $python_from (no pip install: --python-from)"
      run ln -sfn "$python_from" "$venv"
    fi
  else
    check_python
    local requirements
    read -r -a requirements <<<"$(torch_requirements)"
    if [ ! -x "$venv/bin/python" ]; then
      change "create the virtual environment $venv"
      run python3 -m venv "$venv"
    fi
    change "install ${requirements[*]} and layerfed from $SOURCE_DIRECTORY into $venv (minutes)"
    run "$venv/bin/pip" install --quiet --disable-pip-version-check "${requirements[@]}"
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
      run "$venv/bin/pip" install --quiet --disable-pip-version-check "tomli>=1.1"  # tomllib before 3.11
    fi
    run "$venv/bin/pip" install --quiet --disable-pip-version-check --upgrade "$SOURCE_DIRECTORY"
  fi
  local link
  link="$(staged "$COMMAND_LINK")"
  ensure_directory "$(dirname "$link")" 755 root root
  if [ "$(readlink "$link" || true)" != "$prefix/venv/bin/layerfed" ]; then
    change "link $link to $prefix/venv/bin/layerfed (for operators: layerfed status)"
    run ln -sfn "$prefix/venv/bin/layerfed" "$link"
  fi
}

# Sets device_address. The key is made by layerfed itself (mode 0600), once: never replaced.
create_key() {
  local key
  key="$(staged "$STATE_DIRECTORY")/key"
  if [ "$dry_run" = true ] && [ ! -e "$key" ]; then
    change "create the device key $key (mode 0600)"
    device_address="0x(address known once the key is made)"
    return 0
  fi
  if [ ! -e "$key" ]; then
    change "create the device key $key (mode 0600)"
  fi
  # layerfed's own key code, called directly (what `layerfed agent init-key` runs, minus the CLI's imports).
  device_address="$("$(staged "$prefix")/venv/bin/python" - "$key" <<'PYTHON'
import sys
from pathlib import Path

from agent.errors import LayerfedError
from agent.adapters.account_identity import load_or_create_account

try:
    print(load_or_create_account(Path(sys.argv[1])).address)
except LayerfedError as error:
    print(f"install.sh: {error}", file=sys.stderr)
    sys.exit(error.exit_code)
PYTHON
)"
  set_mode "$key" 600
  set_owner "$key" "$service_user" "$service_user"
}

create_broker_password() {
  local password_file
  password_file="$(staged "$CONFIG_DIRECTORY")/mqtt-password"
  if [ ! -e "$password_file" ]; then
    head -c 18 /dev/urandom | base64 | install_content "$password_file" 640 root "$service_user"
  else
    set_mode "$password_file" 640
    set_owner "$password_file" root "$service_user"
  fi
}

# The commented template, with this device's broker username and password file, and the backend.
render_config() {
  local address=$1
  printf '# Written by deploy/install.sh for %s (training backend %s). install.sh never overwrites it.\n' \
    "$architecture" "$(training_backend)"
  sed -e "s|^# username = .*|username = \"${address,,}\"|" \
    -e "s|^# password_file = \"/etc/layerfed/mqtt-password\"|password_file = \"$CONFIG_DIRECTORY/mqtt-password\"|" \
    -e "s|^backend = .*|backend = \"$(training_backend)\"|" \
    "$SOURCE_DIRECTORY/deploy/agent.toml"
}

install_config() {
  local address=$1 config
  config="$(staged "$CONFIG_DIRECTORY")/agent.toml"
  if [ -e "$config" ]; then
    set_mode "$config" 640
    set_owner "$config" root "$service_user"
    return 0
  fi
  render_config "$address" | install_content "$config" 640 root "$service_user"
  say "edit $CONFIG_DIRECTORY/agent.toml: [federation] contract and chain_url, [broker], [data]"
}

# [agent] memory_limit of the installed configuration ("" when absent), checked like the agent checks it.
memory_limit() {
  local config=$1 value
  [ -f "$config" ] || return 0
  value="$(awk '
    /^[[:space:]]*\[/ { section = $0; gsub(/[][[:space:]]/, "", section); next }
    section == "agent" && /^[[:space:]]*memory_limit[[:space:]]*=/ {
      sub(/^[^=]*=[[:space:]]*/, ""); sub(/[[:space:]]*#.*$/, ""); gsub(/"/, ""); print; exit
    }' "$config")"
  if [ -n "$value" ] && ! [[ "$value" =~ $MEMORY_LIMIT_PATTERN ]]; then
    die 78 "$config: agent.memory_limit must be systemd's MemoryMax syntax (\"1500M\", \"2G\", \"80%\"), not \"$value\""
  fi
  printf '%s' "$value"
}

render_unit() {
  sed -e "s|/opt/layerfed/|$prefix/|g" \
    -e "s|^User=layerfed$|User=$service_user|" \
    -e "s|^Group=layerfed$|Group=$service_user|" \
    "$SOURCE_DIRECTORY/deploy/layerfed-agent.service"
}

systemd_version() { systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 + 0 }'; }

install_unit() {
  local unit_directory dropins limit
  unit_directory="$(staged "$UNIT_DIRECTORY")"
  dropins="$unit_directory/$UNIT_NAME.d"
  ensure_directory "$unit_directory" 755 root root
  render_unit | install_content "$unit_directory/$UNIT_NAME" 644 root root
  limit="$(memory_limit "$(staged "$CONFIG_DIRECTORY")/agent.toml")"
  if [ -n "$limit" ]; then
    ensure_directory "$dropins" 755 root root
    printf '# From [agent] memory_limit in %s; rerun install.sh after changing it.\n[Service]\nMemoryMax=%s\n' \
      "$CONFIG_DIRECTORY/agent.toml" "$limit" | install_content "$dropins/memory.conf" 644 root root
  else
    remove "$dropins/memory.conf"
  fi
  if systemd_running && [ "$(systemd_version)" -ge 254 ]; then
    ensure_directory "$dropins" 755 root root
    printf '# Exponential restart delays (systemd 254 or newer): 30 s, doubling up to 10 minutes.\n[Service]\nRestartSteps=5\nRestartMaxDelaySec=10min\n' |
      install_content "$dropins/backoff.conf" 644 root root
  fi
}

enable_service() {
  if ! systemd_running; then
    if is_system_root; then
      say "systemd is not PID 1 here (no /run/systemd/system): not calling systemctl; start the agent by hand:"
    else
      say "--root is set: not calling systemctl; on the target system run:"
    fi
    say "  systemctl daemon-reload && systemctl enable --now $UNIT_NAME"
    return 0
  fi
  run systemctl daemon-reload
  if ! systemctl is-enabled --quiet "$UNIT_NAME"; then
    change "enable $UNIT_NAME (it starts at every boot)"
    run systemctl enable --quiet "$UNIT_NAME"
  fi
  if systemctl is-active --quiet "$UNIT_NAME"; then
    change "restart the running agent (it continues from its saved state)"
    run systemctl restart "$UNIT_NAME"
  else
    say "start it once $CONFIG_DIRECTORY/agent.toml names your federation: systemctl start $UNIT_NAME"
  fi
}

install() {
  say "installing layerfed from $SOURCE_DIRECTORY into $(staged "$prefix") for $architecture$([ "$dry_run" = true ] && echo ' (dry run)')"
  torch_requirements >/dev/null
  create_user
  explain_ownership
  install_program
  ensure_directory "$(staged "$CONFIG_DIRECTORY")" 750 root "$service_user"
  ensure_directory "$(staged "$STATE_DIRECTORY")" 750 "$service_user" "$service_user"
  create_key
  create_broker_password
  install_config "$device_address"
  install_unit
  enable_service
  say "device address $device_address"
  say "on the broker, once: mosquitto_passwd -b /etc/mosquitto/layerfed/passwords ${device_address,,} \"\$(cat $CONFIG_DIRECTORY/mqtt-password)\""
  say "fund the address on your chain, then check with: layerfed status"
}

uninstall() {
  say "uninstalling layerfed from $(staged "$prefix")$([ "$dry_run" = true ] && echo ' (dry run)')"
  if systemd_running; then
    if systemctl is-active --quiet "$UNIT_NAME" || systemctl is-enabled --quiet "$UNIT_NAME" 2>/dev/null; then
      change "stop and disable $UNIT_NAME"
      run systemctl disable --now --quiet "$UNIT_NAME"
    fi
  fi
  remove "$(staged "$UNIT_DIRECTORY")/$UNIT_NAME" "$(staged "$UNIT_DIRECTORY")/$UNIT_NAME.d"
  if systemd_running; then run systemctl daemon-reload; fi
  remove "$(staged "$COMMAND_LINK")" "$(staged "$prefix")/venv"
  if [ -d "$(staged "$prefix")" ] && [ -z "$(ls -A "$(staged "$prefix")")" ]; then
    remove "$(staged "$prefix")"
  fi
  if is_system_root && is_superuser && getent passwd "$service_user" >/dev/null; then
    change "remove the user $service_user"
    run userdel "$service_user"
  fi
  if [ "$purge" = true ]; then
    remove "$(staged "$STATE_DIRECTORY")" "$(staged "$CONFIG_DIRECTORY")"
  else
    say "kept $STATE_DIRECTORY (state and the device key) and $CONFIG_DIRECTORY; --purge removes them"
  fi
}

"$action"
