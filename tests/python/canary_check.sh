#!/usr/bin/env bash
# Checks that a canary string appears in no file under a log directory.
# The logs must also be real, with at least one non-empty file and at least
# one trace-level line, so a missing or silent log cannot pass the check.
#
# Usage: tests/python/canary_check.sh LOG_DIR CANARY
# Exits 0 when every check passes, 1 when one fails, 2 on bad arguments.
set -euo pipefail

if (($# != 2)) || [[ -z $1 || -z $2 ]]; then
  echo "usage: $0 LOG_DIR CANARY" >&2
  exit 2
fi
log_dir=$1
canary=$2

if [[ ! -d $log_dir ]]; then
  echo "FAIL log directory $log_dir does not exist" >&2
  exit 1
fi

files=0
non_empty=0
while IFS= read -r -d '' file; do
  files=$((files + 1))
  if [[ -s $file ]]; then
    non_empty=$((non_empty + 1))
  fi
done < <(find "$log_dir" -type f -print0)
if ((non_empty == 0)); then
  echo "FAIL no non-empty log file under $log_dir ($files files)" >&2
  exit 1
fi

# Text logs print the level as a word, JSON logs as "level":"TRACE".
trace_pattern='(^|[[:space:]])TRACE([[:space:]]|$)|"level":[[:space:]]*"TRACE"'
# grep -c prints "file:count" for every file and exits 1 when no line matches.
trace_lines=$({ grep -rEac -- "$trace_pattern" "$log_dir" || true; } |
  awk -F: '{ sum += $NF } END { print sum + 0 }')
if ((trace_lines == 0)); then
  echo "FAIL no trace-level line in the logs under $log_dir; start the servers with --log-level trace" >&2
  exit 1
fi

# -a reads binary files as text, -F takes the canary literally.
if leaks=$(grep -rlaF -- "$canary" "$log_dir"); then
  echo "FAIL the canary appears in these log files:" >&2
  while IFS= read -r file; do
    count=$(grep -caF -- "$canary" "$file")
    echo "  $file ($count lines), first at line $(grep -naF -m1 -- "$canary" "$file" | cut -d: -f1)" >&2
  done <<<"$leaks"
  exit 1
fi

echo "ok   canary absent from $non_empty non-empty log files ($trace_lines trace-level lines) under $log_dir"
