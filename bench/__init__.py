"""Benchmarks: each prints rates or latency percentiles beside a peer measured in the
same run (as a ratio) and the peak RSS of eventpipe's own process."""
