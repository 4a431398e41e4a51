# Tries every way out of kiln's sandbox it knows, and reports what it saw:
#   escape.sh MARKER WRITE
# MARKER is a host file the run must not be able to read, WRITE a host path
# it must not be able to create. One line per probe: "NAME: blocked" or
# "NAME: reached ...", then facts about the process (ids, capabilities).
M=$1
W=$2
probe() {
  name=$1
  shift
  if out=$("$@" 2>/dev/null) && [ -n "$out" ]; then
    echo "$name: reached $out"
  else
    echo "$name: blocked"
  fi
}
probe direct cat "$M"
probe proc-1-root cat "/proc/1/root$M"
probe proc-self-root cat "/proc/self/root$M"
probe proc-1-cwd cat "/proc/1/cwd$M"
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  probe "proc-$p-root" cat "$d/root$M"
  probe "proc-$p-cwd" cat "$d/cwd$M"
done
probe dotdot sh -c "cd / && cd ../../../../.. && cat .$M"
probe proc-1-exe sh -c "test -r /proc/1/exe && echo readable"
probe proc-1-environ cat /proc/1/environ
probe proc-1-mem sh -c "head -c1 /proc/1/mem >/dev/null && echo readable"
probe mount-tmpfs sh -c "mkdir -p /kiln-probe-mnt && mount -t tmpfs none /kiln-probe-mnt && echo mounted"
probe mknod sh -c "mknod /kiln-probe-dev b 8 0 && echo made"
probe write-proc-1-root sh -c "echo pwned > /proc/1/root$W && echo written"
probe controlling-tty sh -c "exec 3</dev/tty && echo opened"
probe chroot-out sh -c "mkdir -p /kiln-probe-c && chroot /kiln-probe-c /bin/true 2>/dev/null; cat /proc/1/root/../../..$M"
rmdir /kiln-probe-mnt /kiln-probe-c 2>/dev/null
rm -f /kiln-probe-dev
# The descriptors a fresh process of the run holds (ls's own directory
# handle aside): kiln's, or the host's, must not be among them.
ls -l /proc/self/fd/ | sed -n 's/.* \([0-9][0-9]*\) -> \(.*\)/fd: \1 \2/p'
echo "uid_map: $(head -n1 /proc/self/uid_map | tr -s ' ' | sed 's/^ //')"
grep -E '^(CapBnd|CapEff|NoNewPrivs):' /proc/self/status | tr -d '\t' | sed 's/:/: /'
echo "nproc: $(grep 'Max processes' /proc/self/limits | tr -s ' ' | cut -d' ' -f3)"
echo "net: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\n' ' ')"
