"""Where group_by_partition puts records: keyed ones where aiokafka's default
partitioner does (also when a key repeats within the call), keyless ones on one
partition, oversize ones apart."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from eventpipe.envelope.kafka import KafkaMessage
from eventpipe.kafka.batches import group_by_partition


def test_keyed_records_go_where_the_default_partitioner_puts_them() -> None:
    keys = [f"customer-{i % 37:06d}".encode() for i in range(500)]  # repeated keys
    records = [KafkaMessage(k, b"v", []) for k in keys]
    records += [KafkaMessage(None, b"v", []) for _ in range(20)]
    records.append(KafkaMessage(b"big", b"x" * 2000, []))
    partitions = [5, 0, 3, 1, 4, 2]  # any order: placement uses the sorted list

    groups, too_large = group_by_partition(partitions, records, max_size=1000)

    assert too_large == [len(records) - 1]
    where = {i: p for p, idx in groups.items() for i in idx}
    assert sorted(where) == list(range(len(records) - 1))
    partitioner = DefaultPartitioner()
    ordered = sorted(partitions)
    for i, key in enumerate(keys):
        assert where[i] == partitioner(key, ordered, ordered)
    assert len({where[i] for i in range(500, 520)}) == 1  # keyless: sticky
    assert all(idx == sorted(idx) for idx in groups.values())  # order kept
