#!/usr/bin/env bash
# Postfix and Dovecot from Debian packages, on loopback only, as the
# reference servers for the side-by-side benchmarks (compare/compare.sh).
#
#   compare/postfix-dovecot.sh install|configure|start|stop|status|fill-wait
#
# Run as root. Idempotent: every step can be repeated. Nothing listens off
# 127.0.0.1 and no port clashes with agua's defaults:
#
#   Postfix  SMTP (postscreen, then smtpd)  127.0.0.1:2526   ($PF_PORT)
#            SMTP implicit TLS (smtpd)      127.0.0.1:2466   ($PF_TLS_PORT)
#   Dovecot  POP3                           127.0.0.1:2111   ($DC_POP3_PORT)
#            IMAP                           127.0.0.1:2144   ($DC_IMAP_PORT)
#
# Mail: Postfix virtual(8) delivers to Maildirs under $VMAIL (owned by the
# system user "vmail"); Dovecot reads the same Maildirs. Accounts are the
# local parts in $USERS of domain $DOMAIN; their password hash ($PASS_HASH,
# a Dovecot scheme string such as {ARGON2ID}$argon2id$...) goes into a
# Dovecot passwd-file. compare/compare.sh passes the hash agua stored for the
# same password, so both servers verify the same argon2id parameters.
#
# Started without systemd (`postfix start`, `dovecot -c FILE`); `stop`
# stops both.
set -euo pipefail

PF_PORT=${PF_PORT:-2526}
PF_TLS_PORT=${PF_TLS_PORT:-2466}
DC_POP3_PORT=${DC_POP3_PORT:-2111}
DC_IMAP_PORT=${DC_IMAP_PORT:-2144}
DOMAIN=${DOMAIN:-example.test}
USERS=${USERS:-demo user0 user1 user2 user3 user4 user5 user6 user7 user8 user9}
VMAIL=${VMAIL:-/var/lib/agua-bench/vmail}
DENY_SRC=${DENY_SRC:-127.81.0.0/16} # refused by postscreen with "drop" (the deny-rule run)
DC_LOGIN_LIMIT=${DC_LOGIN_LIMIT:-100} # login processes per protocol (Dovecot's default_process_limit)
DC_AUTH_CACHE=${DC_AUTH_CACHE:-0} # 1: Dovecot's auth_cache on (10M, 5 min TTL, as agua's login cache); 0: its default, off
DC_CONF=/etc/dovecot/agua-bench.conf
DC_PASSWD=/etc/dovecot/agua-bench.passwd
DC_BASE=/run/dovecot-agua-bench

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

install() {
  if ! command -v postfix >/dev/null || ! command -v dovecot >/dev/null || ! command -v smtp-source >/dev/null \
     || [ ! -e /usr/lib/dovecot/pop3 ] || [ ! -e /usr/lib/dovecot/imap ]; then
    # "Local only" makes the package's own main.cf listen on loopback only
    # (inet_interfaces = loopback-only) should anything start it.
    printf '%s\n' "postfix postfix/main_mailer_type select Local only" \
      "postfix postfix/mailname string postfix-bench.localdomain" | debconf-set-selections
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y postfix dovecot-pop3d dovecot-imapd
  fi
  # Installed with "No configuration" (as .ci/run does), the package leaves
  # no main.cf: start from Debian's, loopback only.
  if [ ! -e /etc/postfix/main.cf ]; then
    cp /usr/share/postfix/main.cf.debian /etc/postfix/main.cf
    postconf -e inet_interfaces=loopback-only myhostname=postfix-bench.localdomain
  fi
  postconf -h mail_version
  dovecot --version
}

configure() {
  id vmail >/dev/null 2>&1 || useradd --system --home-dir "$VMAIL" --no-create-home --shell /usr/sbin/nologin vmail
  local uid gid
  uid=$(id -u vmail); gid=$(id -g vmail)
  mkdir -p "$VMAIL/$DOMAIN"
  chown -R vmail:vmail "$(dirname "$VMAIL")"

  # --- Postfix: Debian's main.cf and master.cf, edited with postconf -----
  postconf -e \
    "myhostname = postfix-bench.localdomain" \
    "inet_interfaces = 127.0.0.1" \
    "inet_protocols = ipv4" \
    "mynetworks = 127.0.0.1/32" \
    "virtual_mailbox_domains = $DOMAIN" \
    "virtual_mailbox_base = $VMAIL" \
    "virtual_mailbox_maps = hash:/etc/postfix/agua-bench-vmailbox" \
    "virtual_uid_maps = static:$uid" \
    "virtual_gid_maps = static:$gid" \
    "virtual_minimum_uid = 100" \
    "message_size_limit = 26214400" \
    "smtpd_client_connection_rate_limit = 600" \
    "smtpd_client_connection_count_limit = 20" \
    "smtpd_client_message_rate_limit = 500" \
    "smtpd_client_recipient_rate_limit = 2000" \
    "smtpd_hard_error_limit = 10" \
    "postscreen_access_list = permit_mynetworks, cidr:/etc/postfix/agua-bench-postscreen.cidr" \
    "postscreen_blacklist_action = drop" \
    "postscreen_greet_action = enforce" \
    "maillog_file = /var/log/postfix-agua-bench.log"
  : > /etc/postfix/agua-bench-vmailbox
  for u in $USERS; do echo "$u@$DOMAIN $DOMAIN/$u/" >> /etc/postfix/agua-bench-vmailbox; done
  postmap /etc/postfix/agua-bench-vmailbox
  echo "$DENY_SRC reject" > /etc/postfix/agua-bench-postscreen.cidr
  # The stock "smtp inet ... smtpd" on *:25 becomes postscreen on
  # 127.0.0.1:$PF_PORT (POSTSCREEN_README: postscreen in front, smtpd
  # behind it as "smtpd pass"); one more smtpd with implicit TLS for the
  # TLS-handshake flood.
  postconf -MX smtp/inet 2>/dev/null || true
  postconf -M "127.0.0.1:$PF_PORT/inet=127.0.0.1:$PF_PORT inet n - y - 1 postscreen" \
    "smtpd/pass=smtpd pass - - y - - smtpd" \
    "dnsblog/unix=dnsblog unix - - y - 0 dnsblog" \
    "tlsproxy/unix=tlsproxy unix - - y - 0 tlsproxy" \
    "127.0.0.1:$PF_TLS_PORT/inet=127.0.0.1:$PF_TLS_PORT inet n - y - - smtpd -o smtpd_tls_wrappermode=yes"
  # The chroot (Debian runs smtpd & co. chrooted) needs copies of a few
  # /etc files; the init script normally does this.
  /usr/lib/postfix/configure-instance.sh - >/dev/null 2>&1 || true
  newaliases
  postfix check

  # --- Dovecot: a self-contained config of its own -----------------------
  local hash=${PASS_HASH:-}
  if [ -z "$hash" ]; then
    hash=$(doveadm pw -s ARGON2ID -p "${PASS:-bench password}")
  fi
  : > "$DC_PASSWD"
  for u in $USERS; do
    echo "$u@$DOMAIN:$hash:$uid:$gid::$VMAIL/$DOMAIN/$u::" >> "$DC_PASSWD"
  done
  chown root:dovecot "$DC_PASSWD"; chmod 640 "$DC_PASSWD"
  cat > "$DC_CONF" <<EOF
# agua bench reference Dovecot (written by compare/postfix-dovecot.sh).
# Dovecot's built-in defaults plus Debian's conf.d choices that matter
# (ssl = yes with the snakeoil certificate, mail_privileged_group = mail),
# on loopback only, on ports of their own.
instance_name = dovecot-agua-bench
base_dir = $DC_BASE
protocols = pop3 imap
listen = 127.0.0.1
ssl = yes
ssl_cert = </etc/ssl/certs/ssl-cert-snakeoil.pem
ssl_key = </etc/ssl/private/ssl-cert-snakeoil.key
mail_privileged_group = mail
mail_location = maildir:~
# The benchmarks' clients are strangers on loopback addresses other than
# 127.0.0.1 (issue 13), which Dovecot does not count as local: without this
# it refuses their USER/LOGIN in plain text ("-ERR [AUTH] Plaintext
# authentication disallowed"), while agua serves them.
disable_plaintext_auth = no
log_path = /var/log/dovecot-agua-bench.log
first_valid_uid = 100

$( [ "$DC_AUTH_CACHE" = 1 ] && printf '%s\n' "# DC_AUTH_CACHE=1: successful logins remembered, as agua's login cache does" "auth_cache_size = 10M" "auth_cache_ttl = 5 mins" "auth_cache_negative_ttl = 0" )
passdb {
  driver = passwd-file
  args = $DC_PASSWD
}
userdb {
  driver = passwd-file
  args = $DC_PASSWD
}

# Anti-abuse, stated explicitly although these are Dovecot 2.3's defaults:
# a failed login is answered after 2s; logins run in "high-security mode"
# (one imap-login/pop3-login process per connection, service_count = 1);
# at most DC_LOGIN_LIMIT (100) login processes per protocol; at most 10 sessions per user
# and address per protocol.
auth_failure_delay = 2 secs
mail_max_userip_connections = 10
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = $DC_POP3_PORT
  }
  inet_listener pop3s {
    port = 0
  }
  service_count = 1
  process_limit = $DC_LOGIN_LIMIT
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $DC_IMAP_PORT
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 1
  process_limit = $DC_LOGIN_LIMIT
}
EOF
  dovecot -c "$DC_CONF" -n >/dev/null
  echo "configured: Postfix 127.0.0.1:$PF_PORT (TLS $PF_TLS_PORT), Dovecot POP3 127.0.0.1:$DC_POP3_PORT IMAP 127.0.0.1:$DC_IMAP_PORT, users: $USERS @$DOMAIN"
}

start() {
  postfix status >/dev/null 2>&1 || postfix start
  if [ ! -e "$DC_BASE/master.pid" ] || ! kill -0 "$(cat "$DC_BASE/master.pid")" 2>/dev/null; then
    dovecot -c "$DC_CONF"
  fi
  for p in "$PF_PORT" "$DC_POP3_PORT" "$DC_IMAP_PORT"; do
    for _ in $(seq 50); do
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
      sleep 0.1
    done
  done
}

stop() {
  postfix status >/dev/null 2>&1 && postfix stop || true
  if [ -e "$DC_BASE/master.pid" ]; then
    doveadm -c "$DC_CONF" stop 2>/dev/null || kill "$(cat "$DC_BASE/master.pid")" 2>/dev/null || true
  fi
  for _ in $(seq 50); do
    postfix status >/dev/null 2>&1 || { [ -e "$DC_BASE/master.pid" ] && kill -0 "$(cat "$DC_BASE/master.pid")" 2>/dev/null; } || break
    sleep 0.2
  done
}

status() {
  postfix status || true
  if [ -e "$DC_BASE/master.pid" ] && kill -0 "$(cat "$DC_BASE/master.pid")" 2>/dev/null; then
    echo "dovecot is running (pid $(cat "$DC_BASE/master.pid"))"
  else
    echo "dovecot is not running"
  fi
}

# fill-wait: wait until Postfix's queue is empty (every accepted message
# delivered into its Maildir), at most ${1:-600} seconds.
fill_wait() {
  local limit=${1:-600} i=0
  while [ "$(find /var/spool/postfix/incoming /var/spool/postfix/active /var/spool/postfix/deferred /var/spool/postfix/maildrop -type f 2>/dev/null | wc -l)" != 0 ]; do
    i=$((i + 1)); [ "$i" -gt $((limit * 2)) ] && { echo "queue not empty after ${limit}s" >&2; return 1; }
    sleep 0.5
  done
}

case "${1:-}" in
  install) install ;;
  configure) configure ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  fill-wait) fill_wait "${2:-600}" ;;
  *) echo "usage: $0 install|configure|start|stop|status|fill-wait [SECONDS]" >&2; exit 2 ;;
esac
