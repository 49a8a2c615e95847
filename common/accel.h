/* accel.h — does this host give lanes hardware virtualization?
 *
 * Shared by lanesd (which picks -accel kvm or tcg) and `lanectl doctor`
 * (which reports it), so the two can never disagree. Pure libc, no state.
 */
#ifndef LANES_ACCEL_H
#define LANES_ACCEL_H

#include <stddef.h>

/* 1 when KVM can run lanes here: /dev/kvm opens read-write *and* the CPU
 * shows vmx/svm. 0 otherwise; `why` (always filled) says which check
 * decided, in words fit for a log line or a doctor report. */
int accel_probe_kvm(char *why, size_t whylen);

#endif
