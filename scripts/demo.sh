#!/usr/bin/env bash
# The README's first command runs this: every step is a real pshnotify command.
set -euo pipefail
NOW="${1:-2023-09-11T10:00:00-04:00}"
PORT="${2:-8025}"
BIN=.venv/bin
# A rehearsal database and mail folder of the demo's own, made afresh on every run: a second
# `make demo` shows its own emails again, and never touches var/pshnotify.db.
DEMO=var/demo
export PSHNOTIFY_SMTP_HOST=127.0.0.1 PSHNOTIFY_SMTP_PORT="$PORT"
export PSHNOTIFY_DATABASE_URL="sqlite:///$DEMO/pshnotify.db"
# The shipped program takes participants' requests: their links are signed with this. A
# real campaign sets its own (openssl rand -hex 32).
export PSHNOTIFY_LINK_SECRET="${PSHNOTIFY_LINK_SECRET:-demo only: not a secret, 32 characters at least}"

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
step() { printf '\n%s$ %s%s\n' "$BOLD" "$*" "$PLAIN"; "$@"; }

rm -rf "$DEMO"
mkdir -p "$DEMO"
chmod 0700 var "$DEMO"
"$BIN/pshnotify" demo catcher --dir "$DEMO/mail" --port "$PORT" > "$DEMO/catcher.log" 2>&1 &
CATCHER=$!
trap 'kill $CATCHER 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

echo "pshnotify demo: the seed program's dates are in the past, so this runs in rehearsal"
echo "time: every command that decides by time gets --now $NOW."
echo "Its database and emails are under $DEMO/, made afresh on every run."
step "$BIN/pshnotify" init
step "$BIN/pshnotify" demo roster --out "$DEMO/sample-roster.csv" --count 500
step "$BIN/pshnotify" roster import "$DEMO/sample-roster.csv"
step "$BIN/pshnotify" launch pilot --yes --now "$NOW"
step "$BIN/pshnotify" run --once --now "$NOW"
step "$BIN/pshnotify" status
shopt -s nullglob
EMAILS=("$DEMO"/mail/*.eml)
if [ ${#EMAILS[@]} -eq 0 ]; then
  echo "no email reached the demo's mail catcher; its log: $DEMO/catcher.log" >&2
  exit 1
fi
FIRST=${EMAILS[0]}
printf '\n%s emails are in %s/mail/ (open them in any mail client). The first one:\n\n' \
  "${#EMAILS[@]}" "$DEMO"
"$BIN/python" - "$FIRST" <<'PY'
import email, email.policy, sys
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
for name in ("From", "To", "Subject", "Date", "Message-ID", "X-Pshnotify-Wave", "X-Pshnotify-Kind"):
    print(f"{name}: {msg[name]}")
print(f"Content-Type: {msg.get_content_type()} (plain text and HTML)\n")
print(msg.get_body(("plain",)).get_content())
PY
printf "\\nLook around: PSHNOTIFY_DATABASE_URL=sqlite:///%s/pshnotify.db %s/pshnotify messages\\n" \
  "$DEMO" "$BIN"
printf 'Next: edit config/program.toml, import your roster, set PSHNOTIFY_SMTP_* to your relay.\n'
