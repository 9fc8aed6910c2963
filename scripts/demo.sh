#!/usr/bin/env bash
# The README's first command runs this: every step is a real pshnotify command.
set -euo pipefail
NOW="${1:-2023-09-11T10:00:00-04:00}"
PORT="${2:-8025}"
BIN=.venv/bin
export PSHNOTIFY_SMTP_HOST=127.0.0.1 PSHNOTIFY_SMTP_PORT="$PORT"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

mkdir -p var
rm -rf var/mail
"$BIN/pshnotify" demo catcher --dir var/mail --port "$PORT" > var/catcher.log 2>&1 &
CATCHER=$!
trap 'kill $CATCHER 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

echo "pshnotify demo: the seed program's dates are in the past, so this runs in rehearsal"
echo "time: every command that decides by time gets --now $NOW."
step "$BIN/pshnotify" init
step "$BIN/pshnotify" demo roster --out var/sample-roster.csv --count 500
step "$BIN/pshnotify" roster import var/sample-roster.csv
step "$BIN/pshnotify" launch pilot --yes --now "$NOW"
step "$BIN/pshnotify" run --once --now "$NOW"
step "$BIN/pshnotify" status
FIRST=$(ls var/mail/*.eml | head -n 1)
printf '\n%s emails are in var/mail/ (open them in any mail client). The first one:\n\n' \
  "$(ls var/mail/*.eml | wc -l)"
"$BIN/python" - "$FIRST" <<'PY'
import email, email.policy, sys
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
for name in ("From", "To", "Subject", "Date", "Message-ID", "X-Pshnotify-Wave", "X-Pshnotify-Kind"):
    print(f"{name}: {msg[name]}")
print(f"Content-Type: {msg.get_content_type()} (plain text and HTML)\n")
print(msg.get_body(("plain",)).get_content())
PY
printf '\nNext: edit config/program.toml, import your roster, set PSHNOTIFY_SMTP_* to your relay.\n'
