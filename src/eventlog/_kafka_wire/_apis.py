"""The API keys ``eventlog serve`` speaks: request and response schemas per version.

One ``Api`` per key, with the versions advertised (only those implemented and tested)
and the first flexible version. The field lists follow Kafka's message definitions
(``clients/src/main/resources/common/message/*.json``): a field's ``since``/``until``
are its ``versions`` there. Fields this server ignores are still read (they shape the
bytes), and response fields it cannot know (rack, authorized operations) get Kafka's
"none" values.
"""

from __future__ import annotations

from typing import NamedTuple

from ._types import (
    ARRAY,
    BOOL,
    BYTES,
    INT8,
    INT16,
    INT32,
    INT64,
    NBYTES,
    NSTRING,
    STRING,
    UUID,
    Array,
    Field,
    Struct,
)

__all__ = ["APIS", "API_VERSIONS", "Api"]

F = Field


class Api(NamedTuple):
    key: int
    name: str
    min_version: int
    max_version: int
    flexible_from: int        # first flexible version (compact types, tagged fields)
    request: Struct
    response: Struct

    def flexible(self, version: int) -> bool:
        return version >= self.flexible_from


PRODUCE = Api(0, "Produce", 3, 8, 9, Struct(
    F("transactional_id", NSTRING, 3),
    F("acks", INT16),
    F("timeout_ms", INT32),
    F("topic_data", ARRAY(
        F("name", STRING),
        F("partition_data", ARRAY(F("index", INT32), F("records", NBYTES))))),
), Struct(
    F("responses", ARRAY(
        F("name", STRING),
        F("partition_responses", ARRAY(
            F("index", INT32),
            F("error_code", INT16),
            F("base_offset", INT64),
            F("log_append_time_ms", INT64, 2, default=-1),
            F("log_start_offset", INT64, 5, default=-1),
            F("record_errors", ARRAY(F("batch_index", INT32),
                                     F("batch_index_error_message", NSTRING)), 8),
            F("error_message", NSTRING, 8))))),
    F("throttle_time_ms", INT32, 1),
))

FETCH = Api(1, "Fetch", 4, 11, 12, Struct(
    F("replica_id", INT32),
    F("max_wait_ms", INT32),
    F("min_bytes", INT32),
    F("max_bytes", INT32, 3, default=0x7FFFFFFF),
    F("isolation_level", INT8, 4),
    F("session_id", INT32, 7),
    F("session_epoch", INT32, 7, default=-1),
    F("topics", ARRAY(
        F("topic", STRING),
        F("partitions", ARRAY(
            F("partition", INT32),
            F("current_leader_epoch", INT32, 9, default=-1),
            F("fetch_offset", INT64),
            F("log_start_offset", INT64, 5, default=-1),
            F("partition_max_bytes", INT32))))),
    F("forgotten_topics_data", ARRAY(F("topic", STRING), F("partitions", Array(INT32))), 7),
    F("rack_id", STRING, 11),
), Struct(
    F("throttle_time_ms", INT32, 1),
    F("error_code", INT16, 7),
    F("session_id", INT32, 7),
    F("responses", ARRAY(
        F("topic", STRING),
        F("partitions", ARRAY(
            F("partition_index", INT32),
            F("error_code", INT16),
            F("high_watermark", INT64),
            F("last_stable_offset", INT64, 4, default=-1),
            F("log_start_offset", INT64, 5, default=-1),
            F("aborted_transactions", ARRAY(F("producer_id", INT64), F("first_offset", INT64),
                                            nullable=True), 4),
            F("preferred_read_replica", INT32, 11, default=-1),
            F("records", NBYTES))))),
))

LIST_OFFSETS = Api(2, "ListOffsets", 1, 5, 6, Struct(
    F("replica_id", INT32),
    F("isolation_level", INT8, 2),
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(
            F("partition_index", INT32),
            F("current_leader_epoch", INT32, 4, default=-1),
            F("timestamp", INT64))))),
), Struct(
    F("throttle_time_ms", INT32, 2),
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(
            F("partition_index", INT32),
            F("error_code", INT16),
            F("timestamp", INT64, 1, default=-1),
            F("offset", INT64, 1, default=-1),
            F("leader_epoch", INT32, 4, default=-1))))),
))

METADATA = Api(3, "Metadata", 0, 12, 9, Struct(
    F("topics", ARRAY(F("topic_id", UUID, 10), F("name", NSTRING), nullable=True)),
    F("allow_auto_topic_creation", BOOL, 4, default=True),
    F("include_cluster_authorized_operations", BOOL, 8, 10),
    F("include_topic_authorized_operations", BOOL, 8),
), Struct(
    F("throttle_time_ms", INT32, 3),
    F("brokers", ARRAY(F("node_id", INT32), F("host", STRING), F("port", INT32),
                       F("rack", NSTRING, 1))),
    F("cluster_id", NSTRING, 2),
    F("controller_id", INT32, 1, default=-1),
    F("topics", ARRAY(
        F("error_code", INT16),
        F("name", NSTRING),
        F("topic_id", UUID, 10),
        F("is_internal", BOOL, 1),
        F("partitions", ARRAY(
            F("error_code", INT16),
            F("partition_index", INT32),
            F("leader_id", INT32),
            F("leader_epoch", INT32, 7, default=-1),
            F("replica_nodes", Array(INT32)),
            F("isr_nodes", Array(INT32)),
            F("offline_replicas", Array(INT32), 5))),
        F("topic_authorized_operations", INT32, 8, default=-2147483648))),
    F("cluster_authorized_operations", INT32, 8, 10, default=-2147483648),
))

OFFSET_COMMIT = Api(8, "OffsetCommit", 0, 7, 8, Struct(
    F("group_id", STRING),
    F("generation_id", INT32, 1, default=-1),
    F("member_id", STRING, 1),
    F("retention_time_ms", INT64, 2, 4, default=-1),
    F("group_instance_id", NSTRING, 7),
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(
            F("partition_index", INT32),
            F("committed_offset", INT64),
            F("committed_leader_epoch", INT32, 6, default=-1),
            F("commit_timestamp", INT64, 1, 1, default=-1),
            F("committed_metadata", NSTRING))))),
), Struct(
    F("throttle_time_ms", INT32, 3),
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(F("partition_index", INT32), F("error_code", INT16))))),
))

OFFSET_FETCH = Api(9, "OffsetFetch", 1, 5, 6, Struct(
    F("group_id", STRING),
    F("topics", ARRAY(F("name", STRING), F("partition_indexes", Array(INT32)), nullable=True)),
), Struct(
    F("throttle_time_ms", INT32, 3),
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(
            F("partition_index", INT32),
            F("committed_offset", INT64),
            F("committed_leader_epoch", INT32, 5, default=-1),
            F("metadata", NSTRING),
            F("error_code", INT16))))),
    F("error_code", INT16, 2),
))

FIND_COORDINATOR = Api(10, "FindCoordinator", 0, 2, 3, Struct(
    F("key", STRING),
    F("key_type", INT8, 1),
), Struct(
    F("throttle_time_ms", INT32, 1),
    F("error_code", INT16),
    F("error_message", NSTRING, 1),
    F("node_id", INT32),
    F("host", STRING),
    F("port", INT32),
))

JOIN_GROUP = Api(11, "JoinGroup", 0, 5, 6, Struct(
    F("group_id", STRING),
    F("session_timeout_ms", INT32),
    F("rebalance_timeout_ms", INT32, 1, default=-1),
    F("member_id", STRING),
    F("group_instance_id", NSTRING, 5),
    F("protocol_type", STRING),
    F("protocols", ARRAY(F("name", STRING), F("metadata", BYTES))),
), Struct(
    F("throttle_time_ms", INT32, 2),
    F("error_code", INT16),
    F("generation_id", INT32, default=-1),
    F("protocol_name", STRING),
    F("leader", STRING),
    F("member_id", STRING),
    F("members", ARRAY(F("member_id", STRING), F("group_instance_id", NSTRING, 5),
                       F("metadata", BYTES))),
))

HEARTBEAT = Api(12, "Heartbeat", 0, 3, 4, Struct(
    F("group_id", STRING),
    F("generation_id", INT32),
    F("member_id", STRING),
    F("group_instance_id", NSTRING, 3),
), Struct(
    F("throttle_time_ms", INT32, 1),
    F("error_code", INT16),
))

LEAVE_GROUP = Api(13, "LeaveGroup", 0, 3, 4, Struct(
    F("group_id", STRING),
    F("member_id", STRING, 0, 2),
    F("members", ARRAY(F("member_id", STRING), F("group_instance_id", NSTRING)), 3),
), Struct(
    F("throttle_time_ms", INT32, 1),
    F("error_code", INT16),
    F("members", ARRAY(F("member_id", STRING), F("group_instance_id", NSTRING),
                       F("error_code", INT16)), 3),
))

SYNC_GROUP = Api(14, "SyncGroup", 0, 3, 4, Struct(
    F("group_id", STRING),
    F("generation_id", INT32),
    F("member_id", STRING),
    F("group_instance_id", NSTRING, 3),
    F("assignments", ARRAY(F("member_id", STRING), F("assignment", BYTES))),
), Struct(
    F("throttle_time_ms", INT32, 1),
    F("error_code", INT16),
    F("assignment", BYTES),
))

DESCRIBE_GROUPS = Api(15, "DescribeGroups", 0, 4, 5, Struct(
    F("groups", Array(STRING)),
    F("include_authorized_operations", BOOL, 3),
), Struct(
    F("throttle_time_ms", INT32, 1),
    F("groups", ARRAY(
        F("error_code", INT16),
        F("group_id", STRING),
        F("group_state", STRING),
        F("protocol_type", STRING),
        F("protocol_data", STRING),
        F("members", ARRAY(
            F("member_id", STRING),
            F("group_instance_id", NSTRING, 4),
            F("client_id", STRING),
            F("client_host", STRING),
            F("member_metadata", BYTES),
            F("member_assignment", BYTES))),
        F("authorized_operations", INT32, 3, default=-2147483648))),
))

LIST_GROUPS = Api(16, "ListGroups", 0, 2, 3, Struct(), Struct(
    F("throttle_time_ms", INT32, 1),
    F("error_code", INT16),
    F("groups", ARRAY(F("group_id", STRING), F("protocol_type", STRING))),
))

API_VERSIONS = Api(18, "ApiVersions", 0, 3, 3, Struct(
    F("client_software_name", STRING, 3),
    F("client_software_version", STRING, 3),
), Struct(
    F("error_code", INT16),
    F("api_keys", ARRAY(F("api_key", INT16), F("min_version", INT16),
                        F("max_version", INT16))),
    F("throttle_time_ms", INT32, 1),
))

CREATE_TOPICS = Api(19, "CreateTopics", 0, 4, 5, Struct(
    F("topics", ARRAY(
        F("name", STRING),
        F("num_partitions", INT32),
        F("replication_factor", INT16),
        F("assignments", ARRAY(F("partition_index", INT32), F("broker_ids", Array(INT32)))),
        F("configs", ARRAY(F("name", STRING), F("value", NSTRING))))),
    F("timeout_ms", INT32),
    F("validate_only", BOOL, 1),
), Struct(
    F("throttle_time_ms", INT32, 2),
    F("topics", ARRAY(F("name", STRING), F("error_code", INT16),
                      F("error_message", NSTRING, 1))),
))

DELETE_TOPICS = Api(20, "DeleteTopics", 0, 3, 4, Struct(
    F("topic_names", Array(STRING)),
    F("timeout_ms", INT32),
), Struct(
    F("throttle_time_ms", INT32, 1),
    F("responses", ARRAY(F("name", STRING), F("error_code", INT16))),
))

DELETE_RECORDS = Api(21, "DeleteRecords", 0, 1, 2, Struct(
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(F("partition_index", INT32), F("offset", INT64))))),
    F("timeout_ms", INT32),
), Struct(
    F("throttle_time_ms", INT32),
    F("topics", ARRAY(
        F("name", STRING),
        F("partitions", ARRAY(F("partition_index", INT32), F("low_watermark", INT64),
                              F("error_code", INT16))))),
))

INIT_PRODUCER_ID = Api(22, "InitProducerId", 0, 1, 2, Struct(
    F("transactional_id", NSTRING),
    F("transaction_timeout_ms", INT32),
), Struct(
    F("throttle_time_ms", INT32),
    F("error_code", INT16),
    F("producer_id", INT64, default=-1),
    F("producer_epoch", INT16, default=-1),
))

DESCRIBE_CONFIGS = Api(32, "DescribeConfigs", 0, 2, 4, Struct(
    F("resources", ARRAY(
        F("resource_type", INT8),
        F("resource_name", STRING),
        F("configuration_keys", Array(STRING, nullable=True)))),
    F("include_synonyms", BOOL, 1),
), Struct(
    F("throttle_time_ms", INT32),
    F("results", ARRAY(
        F("error_code", INT16),
        F("error_message", NSTRING),
        F("resource_type", INT8),
        F("resource_name", STRING),
        F("configs", ARRAY(
            F("name", STRING),
            F("value", NSTRING),
            F("read_only", BOOL),
            F("is_default", BOOL, 0, 0),
            F("config_source", INT8, 1, default=-1),
            F("is_sensitive", BOOL),
            F("synonyms", ARRAY(F("name", STRING), F("value", NSTRING),
                                F("source", INT8)), 1))))),
))

CREATE_PARTITIONS = Api(37, "CreatePartitions", 0, 1, 2, Struct(
    F("topics", ARRAY(
        F("name", STRING),
        F("count", INT32),
        F("assignments", ARRAY(F("broker_ids", Array(INT32)), nullable=True)))),
    F("timeout_ms", INT32),
    F("validate_only", BOOL),
), Struct(
    F("throttle_time_ms", INT32),
    F("results", ARRAY(F("name", STRING), F("error_code", INT16),
                       F("error_message", NSTRING))),
))

APIS: dict[int, Api] = {api.key: api for api in (
    PRODUCE, FETCH, LIST_OFFSETS, METADATA, OFFSET_COMMIT, OFFSET_FETCH, FIND_COORDINATOR,
    JOIN_GROUP, HEARTBEAT, LEAVE_GROUP, SYNC_GROUP, DESCRIBE_GROUPS, LIST_GROUPS,
    API_VERSIONS, CREATE_TOPICS, DELETE_TOPICS, DELETE_RECORDS, INIT_PRODUCER_ID,
    DESCRIBE_CONFIGS, CREATE_PARTITIONS)}
