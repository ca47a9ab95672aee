"""Measuring speed: timers that respect CUDA's asynchrony, the roofline model and device specs.

The primitives live here (timers, roofline, shapes, floor, metrics, workloads, peers, loadgen) and
know nothing of the benchmark programs in benchmarks/, which combine them and write their reports
through harness.py (one envelope, one writer, one loader, one naming rule).
"""
from .device import pick_device_dtype
from .roofline import (DEVICE_SPECS, DeviceSpec, arithmetic_intensity, attainable_flops, decoder_bytes,
                       decoder_flops, detect_device, matmul_params, measure_bandwidth,
                       measure_matmul_flops, ridge_point, roofline_time)
from .timers import Timer, median_time, sync, time_calls

__all__ = ["pick_device_dtype", "DEVICE_SPECS", "DeviceSpec", "arithmetic_intensity", "attainable_flops",
           "decoder_bytes", "decoder_flops", "detect_device", "matmul_params", "measure_bandwidth",
           "measure_matmul_flops", "ridge_point", "roofline_time", "Timer", "median_time", "sync",
           "time_calls"]
