# Helpers sourced by the launchers in this directory (not run on its own).
#
# Every launcher builds each command as an array of words, then either prints it
# (`--dry-run`) or runs it; `quote_words` prints the words so that pasting the
# line into bash runs exactly that command.

# A word needs no quoting when it is made only of these characters.
_SAFE_WORD='^[A-Za-z0-9_./:=,@%+-]+$'

# shell_quote WORD: WORD as one shell word. `--flag=value with spaces` is printed
# as --flag='value with spaces' (the same word to the shell, easier to read).
shell_quote() {
  local word=$1 prefix='' q="'"
  if [[ $word =~ $_SAFE_WORD ]]; then
    printf '%s' "$word"
    return
  fi
  if [[ $word =~ ^(--?[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix=${BASH_REMATCH[1]}
    word=${BASH_REMATCH[2]}
    if [[ $word =~ $_SAFE_WORD ]]; then
      printf '%s%s' "$prefix" "$word"
      return
    fi
  fi
  # Inside single quotes only ' itself is special: close, escape it, reopen.
  printf '%s%s%s%s' "$prefix" "$q" "${word//$q/$q\\$q$q}" "$q"
}

# quote_words WORD...: the words quoted and joined by single spaces (no newline).
quote_words() {
  local word sep=''
  for word in "$@"; do
    printf '%s' "$sep"
    shell_quote "$word"
    sep=' '
  done
}

# usage_error MESSAGE...: the message and a pointer to --help on stderr; exit 2.
usage_error() {
  local line
  for line in "$@"; do
    printf '%s: error: %s\n' "$PROG" "$line" >&2
  done
  printf "Run '%s --help' for the full usage.\n" "$PROG" >&2
  exit 2
}

# require_value OPTION ARGS...: fails unless the option's value (the next
# argument) is present and is not itself an option.
require_value() {
  if (($# < 2)) || [[ -z $2 || $2 == -* ]]; then
    usage_error "option $1 needs a value ($1=VALUE or $1 VALUE)"
  fi
}

# require_positive_int OPTION VALUE
require_positive_int() {
  if ! [[ $2 =~ ^[1-9][0-9]*$ ]]; then
    usage_error "option $1 must be a positive integer, got '$2'"
  fi
}

# run_cmd WORD...: print the command (dry run) or echo it to stderr and run it.
run_cmd() {
  if ((DRY_RUN)); then
    quote_words "$@"
    printf '\n'
  else
    printf '+ %s\n' "$(quote_words "$@")" >&2
    "$@"
  fi
}

# run_shell LINE: like run_cmd, for a line that needs a shell (a pipeline).
run_shell() {
  if ((DRY_RUN)); then
    printf '%s\n' "$1"
  else
    printf '+ %s\n' "$1" >&2
    bash -o errexit -o nounset -o pipefail -c "$1"
  fi
}

# absolute_path PATH: PATH made absolute against the current directory; a URL
# (gs://...) is left as it is.
absolute_path() {
  case $1 in
    /* | *://*) printf '%s' "$1" ;;
    *) printf '%s/%s' "$PWD" "${1#./}" ;;
  esac
}
