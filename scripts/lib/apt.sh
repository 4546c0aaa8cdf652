# Installing Debian packages for scripts/setup, sourced (not run). One function, apt_install,
# which:
#   - runs apt-get as root, or through `sudo -n` when not root (and says so), or, when neither
#     works, names the packages and the command that installs them and fails;
#   - waits for the apt/dpkg lock that another apt (a fresh cloud machine's unattended upgrades,
#     say) holds, up to KITE_APT_WAIT seconds (600), saying who holds it, instead of failing;
#   - installs servers (etcd, PostgreSQL) without enabling or starting their system services: a
#     policy-rc.d that refuses every start while it runs, and units the packages enabled are
#     disabled again. Tests start their own servers in temp dirs.
#   - runs `apt-get update` once per script run.
# scripts/test-setup tests all of it (as a normal user, and under held locks).

apt_updated=${apt_updated:-}

apt_say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

# Who holds an apt/dpkg lock, as "pid N (command)", or nothing.
apt_lock_holder() {
  local lock pid
  for lock in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock /var/lib/apt/lists/lock \
    /var/cache/apt/archives/lock; do
    [ -e "$lock" ] || continue
    pid=$(fuser "$lock" 2>/dev/null | tr -s ' ' | sed 's/^ //' | cut -d' ' -f1) || true
    if [ -n "$pid" ]; then
      printf 'pid %s (%s) holds %s' "$pid" "$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-60)" "$lock"
      return 0
    fi
  done
  return 1
}

# Runs apt-get with $@ as root, retrying while another process holds the apt/dpkg locks. apt's
# own DPkg::Lock::Timeout covers dpkg's frontend lock; the lists and archives locks are not
# covered by it, so a lock error is also retried here until KITE_APT_WAIT runs out.
apt_run() {
  local wait=${KITE_APT_WAIT:-600} start=$SECONDS out status said=
  out=$(mktemp)
  while :; do
    status=0
    "${apt_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=10 "$@" \
      >"$out" 2>&1 || status=$?
    if [ "$status" -ne 0 ] && grep -q 'Could not get lock\|Unable to acquire the dpkg\|Unable to lock' "$out" &&
      [ $((SECONDS - start)) -lt "$wait" ]; then
      if [ -z "$said" ]; then
        apt_say "waiting for the apt/dpkg lock: $(apt_lock_holder || echo 'another apt or dpkg') (up to ${wait} s, KITE_APT_WAIT)"
        said=1
      fi
      sleep 2
      continue
    fi
    break
  done
  if [ "$status" -ne 0 ]; then
    cat "$out" >&2
    apt_say "apt-get $* failed (exit $status)"
  fi
  rm -f "$out"
  return "$status"
}

# Whether Debian package $1 is installed.
apt_have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# Installs the Debian packages named, skipping those already installed.
apt_install() {
  local want=() pkg
  for pkg in "$@"; do apt_have "$pkg" || want+=("$pkg"); done
  [ "${#want[@]}" -eq 0 ] && return 0
  apt_sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      apt_say "not root: installing ${want[*]} with sudo"
      apt_sudo=(sudo -n)
    else
      apt_say "${want[*]} must be installed from Debian, which needs root, and this user is not root and has no password-less sudo."
      apt_say "Install them with:  sudo apt-get install -y ${want[*]}   (or run this script as root), then run it again."
      return 1
    fi
  fi
  if [ -z "$apt_updated" ]; then
    apt_say "apt-get update"
    apt_run update -qq || return 1
    apt_updated=1
  fi
  # Services the packages bring are installed, not started: policy-rc.d answers "forbidden"
  # (101) to every invoke-rc.d/deb-systemd-invoke start while this runs, and the units the
  # packages enable are disabled afterwards.
  local policy=/usr/sbin/policy-rc.d placed= units_before
  if [ ! -e "$policy" ]; then
    "${apt_sudo[@]}" sh -c "printf '#!/bin/sh\n# scripts/setup: no service starts while it installs\nexit 101\n' >$policy && chmod 755 $policy" &&
      placed=1
  fi
  units_before=$(apt_enabled_units)
  apt_say "installing ${want[*]} from Debian"
  local status=0
  apt_run install -y -qq "${want[@]}" || status=$?
  [ -n "$placed" ] && "${apt_sudo[@]}" rm -f "$policy"
  local unit
  for unit in $(comm -13 <(echo "$units_before") <(apt_enabled_units)); do
    apt_say "disabling the system service $unit the package enabled (tests start their own)"
    "${apt_sudo[@]}" systemctl disable --quiet "$unit" 2>/dev/null ||
      "${apt_sudo[@]}" find /etc/systemd/system -name "$unit" -type l -delete
  done
  return "$status"
}

# The system services enabled through /etc/systemd/system's .wants directories, sorted.
apt_enabled_units() {
  find /etc/systemd/system -path '*.wants/*' -name '*.service' -printf '%f\n' 2>/dev/null | sort -u
}
