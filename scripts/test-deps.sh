#!/usr/bin/env bash
# The real servers the tests drive, from Debian's packages: a Postfix relay, an IMAP server
# (Dovecot) and Chromium for the console's browser tests. Installed only when missing (as root);
# their own services are not used: each test starts its own on a free loopback port.
set -euo pipefail
need=()
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ -x /usr/bin/chromium ] || need+=(chromium)
[ "${#need[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "the tests need Debian's ${need[*]}: run 'sudo apt-get install ${need[*]}', then make test again" >&2
  exit 2
fi
echo "installing Debian's ${need[*]} for the tests (once)" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
