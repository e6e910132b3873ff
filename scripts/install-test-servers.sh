#!/usr/bin/env bash
# Installs the real servers the integration tests start on 127.0.0.1 (Debian packages), when missing:
#   ipmi_sim (openipmi) + ipmitool   -> IPMI/BMC source tests
#   victoria-metrics                 -> InfluxDB line-protocol write path (/api/v2/write) tests
#   prometheus                       -> Prometheus read-store tests
#   gcc                              -> the fake NVML library the NVML tests build
set -euo pipefail
need=()
command -v ipmi_sim >/dev/null || need+=(openipmi)
command -v ipmitool >/dev/null || need+=(ipmitool)
command -v victoria-metrics >/dev/null || need+=(victoria-metrics)
command -v prometheus >/dev/null || need+=(prometheus)
command -v gcc >/dev/null || need+=(gcc)
[ ${#need[@]} -eq 0 ] && exit 0
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    # a runner that is not root installs through sudo when it may without a password (GitHub's runners can)
    if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
        echo "missing test servers: ${need[*]}; install them (Debian: sudo apt-get install ${need[*]})" >&2
        exit 1
    fi
    as_root=(sudo -n)
fi
echo "installing test servers: ${need[*]}"
# a fresh machine's unattended upgrades may hold dpkg's lock for a while: wait for it rather than fail at once
lock=(-o DPkg::Lock::Timeout=300)
# Debian starts and enables these daemons on install, listening on every interface without a login; the tests start
# their own on 127.0.0.1, so the ones installed here are stopped and left disabled, also when the install fails partway
quiet_daemons() {
    [ -d /run/systemd/system ] || return 0
    for unit in prometheus victoria-metrics; do
        if printf '%s\n' "${need[@]}" | grep -qx "$unit"; then
            ${as_root[@]+"${as_root[@]}"} systemctl disable --now "$unit" >/dev/null 2>&1 || true
        fi
    done
}
trap quiet_daemons EXIT
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" update -qq   # empty: bash < 4.4 safe
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get "${lock[@]}" install -y -qq --no-install-recommends "${need[@]}" >/dev/null
