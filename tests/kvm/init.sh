#!/bin/busybox sh
# SPDX-License-Identifier: MIT
#
# /init of the nested test VM (tests/kvm/nested.sh builds it into the
# initramfs).  Loads KVM, runs the job named on the kernel command line
# between @@BEGIN and @@END lines on the console, and reboots, which ends
# QEMU (-no-reboot).
#
#   pc.job=test   test_kvm --label pc.label [--expect-exit pc.expect]
#                 [--expect-bitmap pc.bitmap]
#   pc.job=bench  postcopy kvm-bench --json for each line of /bench.list,
#                 pc.reps times, each result on a line starting with @@JSON
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp

pc_job= pc_label=nested pc_expect= pc_bitmap= pc_reps=
for word in $(cat /proc/cmdline); do
	case $word in
	pc.job=*) pc_job=${word#*=} ;;
	pc.label=*) pc_label=${word#*=} ;;
	pc.reps=*) pc_reps=${word#*=} ;;
	pc.expect=*) pc_expect=${word#*=} ;;
	pc.bitmap=*) pc_bitmap=${word#*=} ;;
	esac
done

# Modules in dependency order; a kernel with KVM built in has none.
for m in irqbypass ccp kvm kvm-amd; do
	if [ -f /mods/$m.ko ] && ! insmod /mods/$m.ko; then
		echo "@@NOTE insmod $m failed"
	fi
done
/bin/kvm_hold &

echo "@@BEGIN $pc_label"
case $pc_job in
test)
	/bin/test_kvm --label "$pc_label" ${pc_expect:+--expect-exit $pc_expect} \
		${pc_bitmap:+--expect-bitmap $pc_bitmap}
	rc=$?
	;;
bench)
	# pc.reps passes over the list, so noise spreads over every run.  A
	# line starting with "? " runs where the kernel supports it: its
	# failure is a note, not a failed job.
	rc=0 rep=0
	while [ $rep -lt ${pc_reps:-3} ]; do
		rep=$((rep + 1))
		while read -r args; do
			case $args in "" | "#"*) continue ;; esac
			optional=0
			case $args in "? "*) optional=1 args=${args#? } ;; esac
			out=$(/bin/postcopy kvm-bench --json $args 2>/tmp/err)
			status=$?
			if [ $status -eq 0 ]; then
				echo "@@JSON $out"
			elif [ $optional = 1 ]; then
				echo "@@NOTE not run here: kvm-bench $args: $(cat /tmp/err)"
			else
				rc=$status
				echo "@@NOTE kvm-bench $args: exit $status: $(cat /tmp/err)"
			fi
		done </bench.list
	done
	;;
*)
	echo "@@NOTE unknown pc.job '$pc_job'"
	rc=2
	;;
esac
echo "@@END $rc"
reboot -f
