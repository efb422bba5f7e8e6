#!/bin/sh
# vpskit media swap, run by a restore (vpskit/server/restore.py) in a throwaway container with the app's media volume at /media.
#
#   media-swap.sh unpack < media.tar   # the backup's files into /media/.vpskit-new, the live ones untouched
#   media-swap.sh swap                 # the live files out to .vpskit-old, the new ones in, the old removed
#   media-swap.sh undo                 # a swap that failed part way taken back: the live files as they were
#
# All old or all new: the swap is renames on one filesystem, recorded in the journal /media/.vpskit-swap
# ("out" while the live entries move aside, "in" while the new ones move in). A swap interrupted by a crash
# is finished, not undone, by the next run of either step, before anything else.
set -eu
cd "${VPSKIT_MEDIA:-/media}"  # settable for the unit test

entries() { # the entries of a folder, dot files included
  for e in "$1"/* "$1"/.[!.]* "$1"/..?*; do [ -e "$e" ] && printf '%s\n' "$e"; done
  return 0
}

finish() {
  [ -e .vpskit-swap ] || return 0
  if [ "$(cat .vpskit-swap)" = out ]; then
    entries . | while IFS= read -r e; do
      case $e in ./.vpskit-*) ;; *) mv "$e" .vpskit-old/ ;; esac
    done
    echo in > .vpskit-swap.new && mv .vpskit-swap.new .vpskit-swap && sync
  fi
  entries .vpskit-new | while IFS= read -r e; do mv "$e" ./; done
  sync
  rm -f .vpskit-swap
  rm -rf .vpskit-old .vpskit-new
  sync
}

case ${1:-} in
  unpack)
    finish
    rm -rf .vpskit-new .vpskit-old
    mkdir .vpskit-new .vpskit-old
    tar -C .vpskit-new -xf -
    sync ;;
  swap)
    [ -d .vpskit-new ] && [ -d .vpskit-old ] || { echo "media-swap: nothing unpacked to swap in" >&2; exit 1; }
    echo out > .vpskit-swap && sync
    finish ;;
  undo)  # after a failed swap (a file that cannot move): "out" moved some live entries aside, "in" moved them all
    # aside and some new ones in; the new ones go back out, the live ones back in, the journal goes last
    if [ -e .vpskit-swap ]; then
      if [ "$(cat .vpskit-swap)" = in ]; then
        entries . | while IFS= read -r e; do
          case $e in ./.vpskit-*) ;; *) mv "$e" .vpskit-new/ ;; esac
        done
      fi
      entries .vpskit-old | while IFS= read -r e; do mv "$e" ./; done
      sync
      rm -f .vpskit-swap
    fi
    rm -rf .vpskit-new .vpskit-old
    sync ;;
  *) echo "usage: media-swap.sh unpack|swap|undo" >&2; exit 2 ;;
esac
