# SPDX-License-Identifier: MIT
# Plots for bench/run-matrix.sh; call with -e "dir='OUT'".
set terminal pngcairo size 900,560 font ",10"
set key outside right
set grid
set logscale x 2

set output dir.'/rate-d0.png'
set title 'Total pages/s against vCPUs, no injected delay'
set xlabel 'vCPU threads'; set ylabel 'pages/s'
plot dir.'/rate-exit-d0.dat' u 1:4 w lp dt 2 t 'baseline (no userfaultfd)', \
     dir.'/rate-exit-d0.dat' u 1:2 w lp t 'exit', \
     dir.'/rate-exitw16-d0.dat' u 1:2 w lp t 'exit -w 16', \
     dir.'/rate-wait1-d0.dat' u 1:2 w lp t 'wait, 1 uffd, 1 reader', \
     dir.'/rate-waitper-d0.dat' u 1:2 w lp t 'wait, 1 uffd per vCPU'

set output dir.'/rate-d30.png'
set title 'Total pages/s against vCPUs, 30 us sleeping delay per fetch'
plot dir.'/rate-exit-d30.dat' u 1:2 w lp t 'exit', \
     dir.'/rate-wait1-d30.dat' u 1:2 w lp t 'wait, 1 uffd, 1 reader', \
     dir.'/rate-waitper-d30.dat' u 1:2 w lp t 'wait, 1 uffd per vCPU'

set output dir.'/latency-cdf-v8.png'
set title 'Per-access latency seen by the vCPU, 8 vCPUs (CDF)'
set xlabel 'latency (us)'; set ylabel 'fraction of accesses'
set logscale x 10
set yrange [0:1]
plot dir.'/cdf-exit-v8-d0.dat' u 1:2 w l t 'exit, delay 0', \
     dir.'/cdf-wait1-v8-d0.dat' u 1:2 w l t 'wait 1 uffd, delay 0', \
     dir.'/cdf-waitper-v8-d0.dat' u 1:2 w l t 'wait per vCPU, delay 0', \
     dir.'/cdf-exit-v8-d30.dat' u 1:2 w l t 'exit, delay 30', \
     dir.'/cdf-wait1-v8-d30.dat' u 1:2 w l t 'wait 1 uffd, delay 30', \
     dir.'/cdf-waitper-v8-d30.dat' u 1:2 w l t 'wait per vCPU, delay 30'
