#!/usr/bin/env bash
# A test CA and the certificates ihc's TLS needs, made with openssl: the coordinator's (server
# and client use, names for the compose services and localhost), one per agent and one for
# the CLI / libihc (client use). EC P-256 keys, unencrypted, mode 0600.
#
#   deploy/make-certs.sh [OPTIONS] [DIR]          (DIR default: deploy/certs)
#
#   --coordinator-names LIST  names in the coordinator's certificate (subjectAltName), comma-
#                             separated; default coordinator,localhost,127.0.0.1,::1. An IP
#                             address is written both as an IP and as a DNS entry: mbedTLS 2.28
#                             (under nng) matches only DNS entries, curl and GnuTLS the IP one.
#                             "" makes none (to add agents to an existing CA).
#   --agents LIST             agent certificates to make (default agent-1,agent-2,agent-3)
#   --clients LIST            client certificates for the CLI and libihc (default client)
#   --days N                  validity in days (default 825)
#   --expired                 make the agent and client certificates already expired (issued
#                             for 2020-01-01 to 2020-01-02), to see what an agent logs
#   --ca-name NAME            common name of a new CA (default "ihc test CA")
#   --owner UID[:GID]         chown the coordinator's and agents' keys (the image's user is 7450:
#                             IHC_UID); client keys stay with whoever ran the script
#   -h, --help
#
# An existing DIR/ca.pem + DIR/ca.key is reused, so certificates can be added later; existing
# certificates are replaced. Files: ca.pem (give it as IHC_TLS_CA everywhere), ca.key (keep it
# off the nodes), coordinator.pem/.key, <agent>.pem/.key, <client>.pem/.key.
set -euo pipefail

dir="" coord_names="coordinator,localhost,127.0.0.1,::1" agents="agent-1,agent-2,agent-3"
clients="client" days=825 expired=0 ca_name="ihc test CA" owner=""
usage() { sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
  --coordinator-names) coord_names=${2?--coordinator-names needs a value}; shift ;;
  --agents) agents=${2?--agents needs a value}; shift ;;
  --clients) clients=${2?--clients needs a value}; shift ;;
  --days) days=${2:?--days needs a value}; shift ;;
  --expired) expired=1 ;;
  --ca-name) ca_name=${2:?--ca-name needs a value}; shift ;;
  --owner) owner=${2:?--owner needs a value}; shift ;;
  -h | --help) usage; exit 0 ;;
  -*) echo "make-certs.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  *) [ -z "$dir" ] || { echo "make-certs.sh: one directory only" >&2; exit 2; }; dir=$1 ;;
  esac
  shift
done
[[ "$days" =~ ^[1-9][0-9]*$ ]] || { echo "make-certs.sh: --days expects a positive number" >&2; exit 2; }
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is needed (apt-get install openssl)" >&2; exit 1; }
dir=${dir:-$(cd "$(dirname "$0")" && pwd)/certs}
mkdir -p "$dir"
cd "$dir"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ -s ca.pem ] && [ -s ca.key ]; then
  echo "using the CA in $dir/ca.pem"
else
  newkey ca.key
  openssl req -x509 -new -key ca.key -sha256 -days "$((days + 365))" -subj "/CN=$ca_name" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.pem 2>/dev/null
  echo "made CA $dir/ca.pem (CN=$ca_name)"
fi

# san NAMES: "DNS:a,IP:1.2.3.4,DNS:1.2.3.4" for a comma-separated list
san() {
  local out="" n
  IFS=, read -ra list <<<"$1"
  for n in "${list[@]}"; do
    [ -n "$n" ] || continue
    if [[ "$n" =~ ^[0-9.]+$ || "$n" == *:* ]]; then
      out="$out,IP:$n,DNS:$n"
    else
      out="$out,DNS:$n"
    fi
  done
  printf '%s' "${out#,}"
}

# issue NAME CN SAN USAGE: NAME.key and NAME.pem signed by the CA
issue() {
  local name=$1 cn=$2 alt=$3 usage=$4
  newkey "$name.key"
  openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$tmp/$name.csr" 2>/dev/null
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$usage" "$alt" >"$tmp/$name.ext"
  if ((expired)) && [ "$name" != coordinator ]; then
    # `openssl x509 -req` cannot backdate; `openssl ca` can (a throwaway database in $tmp)
    : >"$tmp/index.txt"
    printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s/index.txt\nnew_certs_dir=%s\nserial=%s/serial\npolicy=p\ndefault_md=sha256\nunique_subject=no\n[p]\ncommonName=supplied\n' \
      "$tmp" "$tmp" "$tmp" >"$tmp/ca.cnf"
    openssl rand -hex 16 >"$tmp/serial"
    openssl ca -batch -notext -config "$tmp/ca.cnf" -cert ca.pem -keyfile ca.key -in "$tmp/$name.csr" \
      -startdate 20200101000000Z -enddate 20200102000000Z -extfile "$tmp/$name.ext" \
      -out "$name.pem" >"$tmp/ca.log" 2>&1 || { cat "$tmp/ca.log" >&2; exit 1; }
  else
    openssl x509 -req -in "$tmp/$name.csr" -CA ca.pem -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
      -sha256 -days "$days" -extfile "$tmp/$name.ext" -out "$name.pem" 2>/dev/null
  fi
  chmod 644 "$name.pem"
  echo "made $dir/$name.pem (CN=$cn$(openssl x509 -in "$name.pem" -noout -enddate | sed 's/notAfter=/, until /'))"
}

[ -z "$coord_names" ] || issue coordinator coordinator "$(san "$coord_names")" serverAuth,clientAuth
IFS=, read -ra list <<<"$agents"
for a in "${list[@]}"; do [ -z "$a" ] || issue "$a" "$a" "DNS:$a" clientAuth; done
IFS=, read -ra list <<<"$clients"
for c in "${list[@]}"; do [ -z "$c" ] || issue "$c" "$c" "DNS:$c" clientAuth; done
chmod 644 ca.pem
if [ -n "$owner" ]; then
  keys=()
  [ -z "$coord_names" ] || keys+=(coordinator.key)
  IFS=, read -ra list <<<"$agents"
  for a in "${list[@]}"; do [ -z "$a" ] || keys+=("$a.key"); done
  ((${#keys[@]} == 0)) || chown "$owner" "${keys[@]}"
fi
echo "done: IHC_TLS_CA=$dir/ca.pem; coordinator: IHC_TLS_CERT=$dir/coordinator.pem IHC_TLS_KEY=$dir/coordinator.key"
