# testlib: the checks the shell tests share (test_generate.sh, test_regress.sh, ...). Source it
# after setting T, a scratch folder; each check counts a pass or prints why it failed, and
# finish prints the count and sets the exit status.
fails=0 passes=0
ok() { passes=$((passes + 1)); }
bad() { echo "FAILED: $*" >&2; fails=$((fails + 1)); }
# expect RC CMD...: runs CMD and checks its exit code; its stdout in $T/out, stderr in $T/err
expect() {
  local want=$1; shift
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ "$rc" -eq "$want" ]; then ok; else bad "exit $rc (wanted $want): $*"; sed 's/^/  | /' "$T/err" "$T/out" >&2; fi
}
# says TEXT: the last command's stderr holds TEXT; prints REGEX: its stdout matches REGEX
says() { if grep -qF -- "$1" "$T/err"; then ok; else bad "message lacks '$1':"; sed 's/^/  | /' "$T/err" >&2; fi; }
prints() { if grep -qE -- "$1" "$T/out"; then ok; else bad "stdout lacks /$1/:"; sed 's/^/  | /' "$T/out" >&2; fi; }
same() { if cmp -s "$1" "$2"; then ok; else bad "$1 and $2 differ"; fi; }
differ() { if cmp -s "$1" "$2"; then bad "$1 and $2 are the same"; else ok; fi; }
there() { if [ -f "$1" ]; then ok; else bad "$1 is missing"; fi; }
absent() { if [ -e "$1" ]; then bad "$1 should not be there"; else ok; fi; }
# finish NAME: the summary line; the exit status is 0 only if every check passed
finish() { echo "$1: $passes checks passed, $fails failed"; [ $fails -eq 0 ]; }
