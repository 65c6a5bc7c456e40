#!/usr/bin/env bash
# The installed tree, as a user gets it: `cmake --install` into a temporary prefix and once
# with DESTDIR, then the programs, pkg-config files, headers, README examples and the
# libraries' exported names are checked against the sources (the public headers, README.md).
# Usage: test_install.sh BUILD_DIR SOURCE_DIR   (env: CMAKE, CC, IHC_SANITIZE from ctest)
set -euo pipefail

build=$(cd "$1" && pwd) src=$(cd "$2" && pwd)
cmake=${CMAKE:-cmake} cc=${CC:-cc}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ihc-install-XXXXXX")
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done # tests that failed midway
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 143' TERM INT

fail() { # the message, then the end of what the processes started here wrote
    local f
    echo "FAIL: $*" >&2
    for f in "$tmp"/*.log "$tmp"/*.out "$tmp"/*.err; do
        [ -s "$f" ] && { echo "--- ${f##*/}:"; tail -20 "$f"; } >&2
    done
    exit 1
}
step() { echo "--- $*"; }

# wait_for SECONDS CMD…: runs CMD every 50 ms until it succeeds; fails after SECONDS.
wait_for() {
    local end=$((SECONDS + $1)) what="${*:2}"
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < end)) || fail "not true within the deadline: $what"
        sleep 0.05
    done
}
# wait_exit PID SECONDS: waits for background process PID to end; sets st to its exit
# status, or to "still running" after SECONDS.
wait_exit() {
    local end=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        if ((SECONDS >= end)); then
            st="still running"
            return
        fi
        sleep 0.05
    done
    st=0
    wait "$1" || st=$?
    local p left=() # reaped: its pid may be reused, cleanup must not signal it
    for p in "${pids[@]}"; do [ "$p" = "$1" ] || left+=("$p"); done
    pids=("${left[@]}")
}

version=$(sed -nE 's/^#define IHC_VERSION[[:space:]]+"([^"]*)".*/\1/p' "$src/common/version.h")
[ -n "$version" ] || fail "no IHC_VERSION in common/version.h"
cached() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
bindir_rel=$(cached CMAKE_INSTALL_BINDIR) libdir_rel=$(cached CMAKE_INSTALL_LIBDIR)
incdir_rel=$(cached CMAKE_INSTALL_INCLUDEDIR)
for d in "$bindir_rel" "$libdir_rel" "$incdir_rel"; do
    [ -n "$d" ] || fail "no CMAKE_INSTALL_{BIN,LIB,INCLUDE}DIR in $build/CMakeCache.txt"
    if [[ $d == /* ]]; then # ctest: SKIP_RETURN_CODE
        echo "SKIP: an absolute install dir ($d) does not move with --prefix or DESTDIR"
        exit 77
    fi
done
# Examples link against the build's libraries: under sanitizers they need the same runtime.
cflags=(-Wall -Wextra -Werror)
[ -z "${IHC_SANITIZE:-}" ] || cflags+=(-fsanitize="$IHC_SANITIZE" -fno-omit-frame-pointer)

# The functions the public headers declare with IHC_API, one per line, sorted. A library's
# headers are its root header and the ihc/ headers it includes (agent.h brings err.h).
api_of() { # api_of HEADER…
    perl -0777 -ne 's{/\*.*?\*/}{}gs; s{//[^\n]*}{}g; s{\\\n}{}g; s{^[ \t]*#[^\n]*}{}mg;
        print "$1\n" while /\bIHC_API\b[^;{]*?\b([A-Za-z_]\w*)\s*\(/g' "$@" | sort -u
}
headers_of() { # headers_of ROOT.h: ROOT.h and the ihc/*.h it includes, recursively
    local h todo=("$1") seen=" " inc
    while ((${#todo[@]})); do
        h=${todo[0]} todo=("${todo[@]:1}")
        [[ $seen == *" $h "* ]] && continue
        seen+="$h "
        echo "$src/include/ihc/$h"
        mapfile -t inc < <(sed -nE 's@^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]ihc/([^>"]+)[>"].*@\1@p' \
            "$src/include/ihc/$h")
        todo+=("${inc[@]}")
    done
}
declare -A lib_root=([ihc-agent]=agent.h [ihc]=client.h)

step "exported names: derived from the public headers"
mkdir -p "$tmp/api"
for lib in "${!lib_root[@]}"; do
    mapfile -t hs < <(headers_of "${lib_root[$lib]}")
    api_of "${hs[@]}" >"$tmp/api/$lib.expected"
    [ -s "$tmp/api/$lib.expected" ] || fail "no IHC_API declaration found in ${hs[*]}"
    echo "lib$lib: $(wc -l <"$tmp/api/$lib.expected") functions in ${hs[*]#$src/include/}"
    printf '%s\n' "${hs[@]}" >>"$tmp/api/claimed"
done
for h in "$src"/include/ihc/*.h; do # an API no library claims would go unchecked
    if [ -n "$(api_of "$h")" ] && ! grep -qxF "$h" "$tmp/api/claimed"; then
        fail "${h#"$src"/} declares IHC_API functions but no library in $0 has it"
    fi
done

# check_tree ROOT PREFIX [SYSROOT]: the files installed under ROOT for prefix PREFIX (ROOT is
# SYSROOT/PREFIX with DESTDIR, else PREFIX).
check_tree() {
    local root=$1 prefix=$2 sysroot=${3:-} lib h p out words
    local bindir=$root/$bindir_rel libdir=$root/$libdir_rel incdir=$root/$incdir_rel
    local runpath
    runpath=\$ORIGIN/$(realpath -m --relative-to="$bindir" "$libdir")

    step "programs: --version, libraries found through their RUNPATH ($bindir)"
    local progs=("$bindir"/*)
    [ -e "${progs[0]}" ] || fail "no program installed in $bindir"
    for p in ihc ihc-agent ihc-coordinator; do
        [ -x "$bindir/$p" ] || fail "$p not installed in $bindir"
    done
    for p in "${progs[@]}"; do
        out=$(env -u LD_LIBRARY_PATH timeout 10 "$p" --version 2>&1) ||
            fail "$p --version: $out"
        [ "$out" = "$(basename "$p") $version" ] || fail "$p --version said '$out'"
        # Running is not enough: a leftover build-tree RUNPATH would find the build's .so.
        local rp
        rp=$(readelf -d "$p" | sed -nE 's/.*\((RUNPATH|RPATH)\).*\[(.*)\]/\2/p')
        [ -z "$rp" ] || [ "$rp" = "$runpath" ] || fail "$p: RUNPATH '$rp', expected '$runpath'"
        while read -r lib; do
            [[ $(realpath "$lib") == "$(realpath "$libdir")/"* ]] || fail "$p loads $lib, not from $libdir"
        done < <(env -u LD_LIBRARY_PATH ldd "$p" | sed -nE 's/^[[:space:]]*libihc[^ ]* => ([^ ]+).*/\1/p')
    done
    for lib in "$libdir"/libihc*.so.*.*; do
        ! readelf -d "$lib" | grep -qE '\((RUNPATH|RPATH)\)' || fail "$lib has a RUNPATH"
    done

    step "libraries: nm -D --defined-only against the headers"
    for lib in "${!lib_root[@]}"; do
        [ -f "$libdir/lib$lib.so" ] || fail "lib$lib.so not in $libdir"
        nm -D --defined-only "$libdir/lib$lib.so" | awk '{print $NF}' | sort -u >"$tmp/api/$lib.actual"
        diff -u --label "declared with IHC_API in the headers of lib$lib" \
            --label "exported by $libdir/lib$lib.so" "$tmp/api/$lib.expected" "$tmp/api/$lib.actual" ||
            fail "lib$lib.so exports other names than its headers declare (diff above)"
    done
    out=$(comm -12 "$tmp/api/ihc.actual" "$tmp/api/ihc-agent.actual")
    [ -z "$out" ] || fail "exported by both libihc.so and libihc-agent.so: $out"

    step "headers: each public header installed and compiles alone"
    for h in "$src"/include/ihc/*.h; do
        h=$(basename "$h")
        cmp -s "$src/include/ihc/$h" "$incdir/ihc/$h" || fail "ihc/$h not installed in $incdir"
        printf '#include <ihc/%s>\ntypedef int ihc_test_nonempty;\n' "$h" |
            "$cc" -std=c11 -pedantic -Wall -Wextra -Werror -fsyntax-only -x c -I"$incdir" - ||
            fail "ihc/$h does not compile on its own from $incdir"
        if command -v c++ >/dev/null; then # C++ services embed the libraries too
            printf '#include <ihc/%s>\n' "$h" |
                c++ -std=c++11 -Wall -Wextra -Werror -fsyntax-only -x c++ -I"$incdir" - ||
                fail "ihc/$h does not compile as C++ from $incdir"
        fi
    done

    step "pkg-config: ihc.pc and ihc-agent.pc name $prefix"
    local pcenv=(env PKG_CONFIG_LIBDIR="$libdir/pkgconfig" PKG_CONFIG_PATH= PKG_CONFIG_SYSROOT_DIR="$sysroot")
    for lib in ihc ihc-agent; do
        [ -f "$libdir/pkgconfig/$lib.pc" ] || fail "$lib.pc not in $libdir/pkgconfig"
        # The final prefix, DESTDIR left out (pkgconf would add the sysroot to it).
        out=$(PKG_CONFIG_LIBDIR="$libdir/pkgconfig" PKG_CONFIG_PATH='' pkg-config --variable=prefix "$lib")
        [ "$out" = "$prefix" ] || fail "$lib.pc: prefix=$out, expected $prefix"
        out=$("${pcenv[@]}" pkg-config --modversion "$lib")
        [ "$out" = "$version" ] || fail "$lib.pc: version $out, expected $version"
        read -r -a words < <("${pcenv[@]}" pkg-config --cflags --libs "$lib")
        [ "${words[*]}" = "-I$incdir -L$libdir -l$lib" ] ||
            fail "pkg-config --cflags --libs $lib gave '${words[*]}', expected -I$incdir -L$libdir -l$lib"
    done
    for p in ihc-coordinator ihc-agent; do # the units, rewritten by deploy/install-units.cmake
        h=$root/lib/systemd/system/$p.service # absent with -DIHC_INSTALL_SYSTEMD=OFF
        [ ! -e "$h" ] || grep -E '^ExecStart=' "$h" | grep -qF "ExecStart=$prefix/$bindir_rel/$p" ||
            fail "$h: ExecStart does not name $prefix/$bindir_rel/$p"
    done

    step "README.md: the C examples compile and link against $root ($cc ${cflags[*]})"
    rm -rf "$tmp/ex" && mkdir "$tmp/ex"
    awk -v d="$tmp/ex" '/^```c[[:space:]]*$/ { n++; on = 1; next } /^```/ { on = 0 }
        on { print > (d "/readme" n ".c") }' "$src/README.md"
    local n=0
    for h in "$tmp"/ex/readme*.c; do
        [ -e "$h" ] || fail "no \`\`\`c block in README.md"
        lib=$(sed -nE 's/.*pkg-config --cflags --libs ([a-z-]+).*/\1/p' "$h" | head -1)
        [ -n "$lib" ] || fail "README.md block $(basename "$h") does not say which pkg-config module"
        # shellcheck disable=SC2046 # the flags are words
        "$cc" "${cflags[@]}" -o "${h%.c}-$lib" "$h" $("${pcenv[@]}" pkg-config --cflags --libs "$lib") ||
            fail "README.md example for $lib does not compile as written ($h):
$(cat -n "$h")"
        n=$((n + 1))
    done
    ((n >= 2)) || fail "README.md has $n C examples, expected the libihc and libihc-agent ones"
}

step "install into a prefix"
prefix=$tmp/prefix
"$cmake" --install "$build" --prefix "$prefix" >"$tmp/install.txt" 2>&1 || {
    cat "$tmp/install.txt"
    fail "cmake --install --prefix $prefix"
}
check_tree "$prefix" "$prefix"

step "run the README examples from the prefix"
export LD_LIBRARY_PATH=$prefix/$libdir_rel${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
apps=("$tmp"/ex/readme*-ihc) svcs=("$tmp"/ex/readme*-ihc-agent)
app=${apps[0]} svc=${svcs[0]}
# Nothing listening: the client fails cleanly, a message and exit 1, after its connect timeout.
st=0
IHC_CONTROL_URL=ipc://$tmp/nobody.sock timeout 10 "$app" dev-1 >"$tmp/app.out" 2>"$tmp/app.err" || st=$?
if [ "$st" != 1 ] || ! grep -q '^interrupt: not connected' "$tmp/app.err"; then
    fail "client example without a coordinator: exit $st (expected 1 and a message)"
fi
# The agent runs without a coordinator too (it keeps dialing), and a signal ends it.
IHC_PUB_URL=ipc://$tmp/nopub.sock IHC_REPORT_URL=ipc://$tmp/norep.sock "$svc" >"$tmp/svc0.out" 2>"$tmp/svc0.err" &
pid=$! && pids+=("$pid")
wait_for 10 grep -q 'module registered' "$tmp/svc0.err"
kill -TERM "$pid"
wait_exit "$pid" 10
[ "$st" = 143 ] || fail "agent example without a coordinator: status $st after SIGTERM, expected 143"

# With the installed coordinator (no Redis: interrupts are delivered all the same): the agent
# example's session is interrupted by the client example, and both say so and exit 0.
# (tcp://: the coordinator refuses ipc:// listeners, see README "Endpoints")
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
export IHC_PUB_URL=tcp://127.0.0.1:$(free_port) IHC_REPORT_URL=tcp://127.0.0.1:$(free_port)
export IHC_CONTROL_URL=tcp://127.0.0.1:$(free_port)
"$prefix/$bindir_rel/ihc-coordinator" --http 127.0.0.1:0 --redis redis://127.0.0.1:1/0 \
    >"$tmp/coord.log" 2>&1 &
coord=$! && pids+=("$coord")
wait_for 10 "$prefix/$bindir_rel/ihc" stats
"$svc" >"$tmp/svc.out" 2>"$tmp/svc.err" &
pid=$! && pids+=("$pid")
has_session() { "$prefix/$bindir_rel/ihc" sessions dev-1 | grep -q '^dev-1-'; }
wait_for 10 has_session
st=0
timeout 10 "$app" dev-1 >"$tmp/app.out" 2>"$tmp/app.err" || st=$?
if [ "$st" != 0 ] || ! grep -q '^ok: 1 sessions stopped' "$tmp/app.out"; then
    fail "client example: exit $st, expected 0 and 'ok: 1 sessions stopped'"
fi
wait_exit "$pid" 10
if [ "$st" != 0 ] || ! grep -q '^dev-1-.*: interrupted after [0-9]* steps' "$tmp/svc.out"; then
    fail "agent example: status $st, expected 0 and 'interrupted after N steps'"
fi
kill -TERM "$coord"
wait_exit "$coord" 10
[ "$st" = 0 ] || fail "coordinator: status $st after SIGTERM; log: $(cat "$tmp/coord.log")"
unset IHC_PUB_URL IHC_REPORT_URL IHC_CONTROL_URL

step "install with DESTDIR"
dprefix=/ihc-install-test-$$
[ ! -e "$dprefix" ] || fail "$dprefix exists"
DESTDIR=$tmp/stage "$cmake" --install "$build" --prefix "$dprefix" >"$tmp/install.txt" 2>&1 || {
    cat "$tmp/install.txt"
    fail "DESTDIR=$tmp/stage cmake --install --prefix $dprefix"
}
[ ! -e "$dprefix" ] || fail "DESTDIR install wrote to $dprefix"
check_tree "$tmp/stage$dprefix" "$dprefix" "$tmp/stage"

echo "install test: ok"
