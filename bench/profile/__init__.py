"""Where the time goes: ORT's profiler per op type and per node, FLOPs from shapes, the machine's measured
peak, the CPU features fast kernels need, and op-type deltas that explain a regression.

Profiles are taken in their own sessions, never inside a timed cell (ARCHITECTURE.md, third wave).
"""
