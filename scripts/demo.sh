#!/usr/bin/env bash
# The README's first command runs this: every step is a real pshnotify command, run in a
# campaign folder that `pshnotify new` makes, as a user would.
set -euo pipefail
NOW="${1:-2023-09-11T10:00:00-04:00}"
PORT="${2:-8025}"
ROOT=$PWD
export PATH="$ROOT/.venv/bin:$PATH"
# A rehearsal campaign folder of the demo's own, made afresh on every run: a second
# `make demo` shows its own emails again, and never touches anything else.
DEMO=var/demo
export PSHNOTIFY_SMTP_HOST=127.0.0.1 PSHNOTIFY_SMTP_PORT="$PORT"
unset PSHNOTIFY_DATABASE_URL PSHNOTIFY_PROGRAM_FILE PSHNOTIFY_TEMPLATES_DIR

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
step() { printf '\n%s%s$ %s%s\n' "$BOLD" "$DEMO" "$*" "$PLAIN"; "$@"; }

rm -rf "$DEMO"
mkdir -p var
chmod 0700 var
pshnotify new "$DEMO" > /dev/null
cd "$DEMO"
pshnotify demo catcher --dir mail --port "$PORT" > catcher.log 2>&1 &
CATCHER=$!
trap 'kill $CATCHER 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done

echo "pshnotify demo: a campaign folder, $DEMO/, made by \`pshnotify new $DEMO\` (the seed"
echo "program, the email templates, a .env, made afresh on every run). The seed's dates are"
echo "in the past, so this runs in rehearsal time: commands that decide by time get --now."
step pshnotify init
step pshnotify demo roster --out sample-roster.csv --count 500
step pshnotify roster import sample-roster.csv
step pshnotify launch pilot --yes --now "$NOW"
step pshnotify run --once --now "$NOW"
step pshnotify status
shopt -s nullglob
EMAILS=(mail/*.eml)
if [ ${#EMAILS[@]} -eq 0 ]; then
  echo "no email reached the demo's mail catcher; its log: $DEMO/catcher.log" >&2
  exit 1
fi
FIRST=${EMAILS[0]}
printf '\n%s emails are in %s/mail/ (open them in any mail client). The first one:\n\n' \
  "${#EMAILS[@]}" "$DEMO"
python - "$FIRST" <<'PY'
import email, email.policy, sys
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=email.policy.default)
for name in ("From", "To", "Subject", "Date", "Message-ID", "X-Pshnotify-Wave", "X-Pshnotify-Kind"):
    print(f"{name}: {msg[name]}")
print(f"Content-Type: {msg.get_content_type()} (plain text and HTML)\n")
print(msg.get_body(("plain",)).get_content())
PY

# A console operator for the demo, with a password made here and shown only this once.
PASSWORD=$(python -c 'import secrets; print(secrets.token_urlsafe(12))')
printf '%s\n' "$PASSWORD" | pshnotify user add demo --role operator --password-stdin > /dev/null
cat <<EOF

The console: run \`make console\`, open http://127.0.0.1:8080/ and sign in as
  login:    demo
  password: $PASSWORD
(this password is shown once; \`pshnotify user add\` in $DEMO/ makes more users).
Look around: cd $DEMO, then ../../.venv/bin/pshnotify status (or messages, plan, report).
Your own campaign: pshnotify new DIR, edit DIR/program.toml and DIR/.env (your relay),
then run pshnotify init, roster import, launch and run in DIR.
EOF
