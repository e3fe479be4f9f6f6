"""The etcd v3 API protos (protos/synod/etcd/) stay wire-compatible with etcd.

Field numbers, types, enum values and gRPC method paths are pinned here from
etcd's published API reference, so an accidental edit of a .proto fails a test.
When the real ``etcdctl`` is installed, its own embedded descriptors are used as
a second, independent oracle (every field etcdctl knows must match ours).
"""

from __future__ import annotations

import importlib
import shutil
import zlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    FileDescriptor,
    MethodDescriptor,
)

MODULES = {
    "mvccpb": "synod.etcd.mvccpb.kv_pb2",
    "authpb": "synod.etcd.authpb.auth_pb2",
    "etcdserverpb": "synod.etcd.etcdserverpb.rpc_pb2",
    "v3lockpb": "synod.etcd.v3lockpb.v3lock_pb2",
    "v3electionpb": "synod.etcd.v3electionpb.v3election_pb2",
}


def _pb2(package: str) -> ModuleType:
    return importlib.import_module(MODULES[package])


def _message(full_name: str) -> Descriptor:
    package, _, rest = full_name.partition(".")
    desc: Descriptor | FileDescriptor = _pb2(package).DESCRIPTOR
    for part in rest.split("."):
        desc = (
            desc.message_types_by_name[part]
            if isinstance(desc, FileDescriptor)
            else (desc.nested_types_by_name[part])
        )
    assert isinstance(desc, Descriptor)
    return desc


@pytest.mark.parametrize("package", sorted(MODULES))
def test_modules_import_with_etcd_package_names(package: str) -> None:
    pb2 = _pb2(package)
    assert pb2.DESCRIPTOR.package == package
    importlib.import_module(MODULES[package] + "_grpc")


# --------------------------------------------------------------- gRPC paths

# Every method path referenced by etcdctl 3.4 (strings in its binary), plus the
# 3.5 additions and the lock/election services used by client libraries.
# (path, client_streaming, server_streaming)
METHODS = [
    ("/etcdserverpb.KV/Range", False, False),
    ("/etcdserverpb.KV/Put", False, False),
    ("/etcdserverpb.KV/DeleteRange", False, False),
    ("/etcdserverpb.KV/Txn", False, False),
    ("/etcdserverpb.KV/Compact", False, False),
    ("/etcdserverpb.Watch/Watch", True, True),
    ("/etcdserverpb.Lease/LeaseGrant", False, False),
    ("/etcdserverpb.Lease/LeaseRevoke", False, False),
    ("/etcdserverpb.Lease/LeaseKeepAlive", True, True),
    ("/etcdserverpb.Lease/LeaseTimeToLive", False, False),
    ("/etcdserverpb.Lease/LeaseLeases", False, False),
    ("/etcdserverpb.Cluster/MemberAdd", False, False),
    ("/etcdserverpb.Cluster/MemberRemove", False, False),
    ("/etcdserverpb.Cluster/MemberUpdate", False, False),
    ("/etcdserverpb.Cluster/MemberList", False, False),
    ("/etcdserverpb.Cluster/MemberPromote", False, False),
    ("/etcdserverpb.Maintenance/Alarm", False, False),
    ("/etcdserverpb.Maintenance/Status", False, False),
    ("/etcdserverpb.Maintenance/Defragment", False, False),
    ("/etcdserverpb.Maintenance/Hash", False, False),
    ("/etcdserverpb.Maintenance/HashKV", False, False),
    ("/etcdserverpb.Maintenance/Snapshot", False, True),
    ("/etcdserverpb.Maintenance/MoveLeader", False, False),
    ("/etcdserverpb.Maintenance/Downgrade", False, False),
    ("/etcdserverpb.Auth/AuthEnable", False, False),
    ("/etcdserverpb.Auth/AuthDisable", False, False),
    ("/etcdserverpb.Auth/AuthStatus", False, False),
    ("/etcdserverpb.Auth/Authenticate", False, False),
    ("/etcdserverpb.Auth/UserAdd", False, False),
    ("/etcdserverpb.Auth/UserGet", False, False),
    ("/etcdserverpb.Auth/UserList", False, False),
    ("/etcdserverpb.Auth/UserDelete", False, False),
    ("/etcdserverpb.Auth/UserChangePassword", False, False),
    ("/etcdserverpb.Auth/UserGrantRole", False, False),
    ("/etcdserverpb.Auth/UserRevokeRole", False, False),
    ("/etcdserverpb.Auth/RoleAdd", False, False),
    ("/etcdserverpb.Auth/RoleGet", False, False),
    ("/etcdserverpb.Auth/RoleList", False, False),
    ("/etcdserverpb.Auth/RoleDelete", False, False),
    ("/etcdserverpb.Auth/RoleGrantPermission", False, False),
    ("/etcdserverpb.Auth/RoleRevokePermission", False, False),
    ("/v3lockpb.Lock/Lock", False, False),
    ("/v3lockpb.Lock/Unlock", False, False),
    ("/v3electionpb.Election/Campaign", False, False),
    ("/v3electionpb.Election/Proclaim", False, False),
    ("/v3electionpb.Election/Leader", False, False),
    ("/v3electionpb.Election/Observe", False, True),
    ("/v3electionpb.Election/Resign", False, False),
]

# Request/response types of methods whose names do not follow Method+Request.
METHOD_TYPES = {
    "/etcdserverpb.KV/Compact": ("CompactionRequest", "CompactionResponse"),
    "/etcdserverpb.Auth/UserAdd": ("AuthUserAddRequest", "AuthUserAddResponse"),
    "/etcdserverpb.Auth/RoleGrantPermission": (
        "AuthRoleGrantPermissionRequest",
        "AuthRoleGrantPermissionResponse",
    ),
    "/v3electionpb.Election/Observe": ("LeaderRequest", "LeaderResponse"),
}


def _all_method_paths() -> dict[str, MethodDescriptor]:
    paths: dict[str, MethodDescriptor] = {}
    for module in MODULES.values():
        for service in importlib.import_module(module).DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                paths[f"/{service.full_name}/{method.name}"] = method
    return paths


@pytest.mark.parametrize(("path", "client_streaming", "server_streaming"), METHODS)
def test_method_paths(path: str, client_streaming: bool, server_streaming: bool) -> None:
    method = _all_method_paths().get(path)
    assert method is not None, f"missing gRPC method {path}"
    assert method.client_streaming is client_streaming
    assert method.server_streaming is server_streaming
    if path in METHOD_TYPES:
        request, response = METHOD_TYPES[path]
        assert method.input_type.name == request
        assert method.output_type.name == response
    # The generated gRPC module must route the same path string.
    package = path[1:].split(".", 1)[0]
    grpc_file = importlib.import_module(MODULES[package] + "_grpc").__file__
    assert grpc_file is not None
    grpc_src = Path(grpc_file).read_text()
    assert f"'{path}'" in grpc_src


def test_no_unexpected_methods() -> None:
    assert sorted(_all_method_paths()) == sorted(p for p, _, _ in METHODS)


# ------------------------------------------------------------- field table

_T = FieldDescriptor
BYTES, STRING, BOOL, ENUM, MSG = (
    _T.TYPE_BYTES,
    _T.TYPE_STRING,
    _T.TYPE_BOOL,
    _T.TYPE_ENUM,
    _T.TYPE_MESSAGE,
)
I64, U64, U32 = _T.TYPE_INT64, _T.TYPE_UINT64, _T.TYPE_UINT32
REP = "repeated"

# (message, field, number, type[, "repeated"])
FIELDS: list[tuple] = [
    ("mvccpb.KeyValue", "key", 1, BYTES),
    ("mvccpb.KeyValue", "create_revision", 2, I64),
    ("mvccpb.KeyValue", "mod_revision", 3, I64),
    ("mvccpb.KeyValue", "version", 4, I64),
    ("mvccpb.KeyValue", "value", 5, BYTES),
    ("mvccpb.KeyValue", "lease", 6, I64),
    ("mvccpb.Event", "type", 1, ENUM),
    ("mvccpb.Event", "kv", 2, MSG),
    ("mvccpb.Event", "prev_kv", 3, MSG),
    ("authpb.UserAddOptions", "no_password", 1, BOOL),
    ("authpb.User", "name", 1, BYTES),
    ("authpb.User", "password", 2, BYTES),
    ("authpb.User", "roles", 3, STRING, REP),
    ("authpb.User", "options", 4, MSG),
    ("authpb.Permission", "permType", 1, ENUM),
    ("authpb.Permission", "key", 2, BYTES),
    ("authpb.Permission", "range_end", 3, BYTES),
    ("authpb.Role", "name", 1, BYTES),
    ("authpb.Role", "keyPermission", 2, MSG, REP),
    ("etcdserverpb.ResponseHeader", "cluster_id", 1, U64),
    ("etcdserverpb.ResponseHeader", "member_id", 2, U64),
    ("etcdserverpb.ResponseHeader", "revision", 3, I64),
    ("etcdserverpb.ResponseHeader", "raft_term", 4, U64),
    ("etcdserverpb.RangeRequest", "key", 1, BYTES),
    ("etcdserverpb.RangeRequest", "range_end", 2, BYTES),
    ("etcdserverpb.RangeRequest", "limit", 3, I64),
    ("etcdserverpb.RangeRequest", "revision", 4, I64),
    ("etcdserverpb.RangeRequest", "sort_order", 5, ENUM),
    ("etcdserverpb.RangeRequest", "sort_target", 6, ENUM),
    ("etcdserverpb.RangeRequest", "serializable", 7, BOOL),
    ("etcdserverpb.RangeRequest", "keys_only", 8, BOOL),
    ("etcdserverpb.RangeRequest", "count_only", 9, BOOL),
    ("etcdserverpb.RangeRequest", "min_mod_revision", 10, I64),
    ("etcdserverpb.RangeRequest", "max_mod_revision", 11, I64),
    ("etcdserverpb.RangeRequest", "min_create_revision", 12, I64),
    ("etcdserverpb.RangeRequest", "max_create_revision", 13, I64),
    ("etcdserverpb.RangeResponse", "header", 1, MSG),
    ("etcdserverpb.RangeResponse", "kvs", 2, MSG, REP),
    ("etcdserverpb.RangeResponse", "more", 3, BOOL),
    ("etcdserverpb.RangeResponse", "count", 4, I64),
    ("etcdserverpb.PutRequest", "key", 1, BYTES),
    ("etcdserverpb.PutRequest", "value", 2, BYTES),
    ("etcdserverpb.PutRequest", "lease", 3, I64),
    ("etcdserverpb.PutRequest", "prev_kv", 4, BOOL),
    ("etcdserverpb.PutRequest", "ignore_value", 5, BOOL),
    ("etcdserverpb.PutRequest", "ignore_lease", 6, BOOL),
    ("etcdserverpb.PutResponse", "prev_kv", 2, MSG),
    ("etcdserverpb.DeleteRangeRequest", "key", 1, BYTES),
    ("etcdserverpb.DeleteRangeRequest", "range_end", 2, BYTES),
    ("etcdserverpb.DeleteRangeRequest", "prev_kv", 3, BOOL),
    ("etcdserverpb.DeleteRangeResponse", "deleted", 2, I64),
    ("etcdserverpb.DeleteRangeResponse", "prev_kvs", 3, MSG, REP),
    ("etcdserverpb.RequestOp", "request_range", 1, MSG),
    ("etcdserverpb.RequestOp", "request_put", 2, MSG),
    ("etcdserverpb.RequestOp", "request_delete_range", 3, MSG),
    ("etcdserverpb.RequestOp", "request_txn", 4, MSG),
    ("etcdserverpb.ResponseOp", "response_range", 1, MSG),
    ("etcdserverpb.ResponseOp", "response_put", 2, MSG),
    ("etcdserverpb.ResponseOp", "response_delete_range", 3, MSG),
    ("etcdserverpb.ResponseOp", "response_txn", 4, MSG),
    ("etcdserverpb.Compare", "result", 1, ENUM),
    ("etcdserverpb.Compare", "target", 2, ENUM),
    ("etcdserverpb.Compare", "key", 3, BYTES),
    ("etcdserverpb.Compare", "version", 4, I64),
    ("etcdserverpb.Compare", "create_revision", 5, I64),
    ("etcdserverpb.Compare", "mod_revision", 6, I64),
    ("etcdserverpb.Compare", "value", 7, BYTES),
    ("etcdserverpb.Compare", "lease", 8, I64),
    ("etcdserverpb.Compare", "range_end", 64, BYTES),
    ("etcdserverpb.TxnRequest", "compare", 1, MSG, REP),
    ("etcdserverpb.TxnRequest", "success", 2, MSG, REP),
    ("etcdserverpb.TxnRequest", "failure", 3, MSG, REP),
    ("etcdserverpb.TxnResponse", "succeeded", 2, BOOL),
    ("etcdserverpb.TxnResponse", "responses", 3, MSG, REP),
    ("etcdserverpb.CompactionRequest", "revision", 1, I64),
    ("etcdserverpb.CompactionRequest", "physical", 2, BOOL),
    ("etcdserverpb.HashKVRequest", "revision", 1, I64),
    ("etcdserverpb.HashKVResponse", "hash", 2, U32),
    ("etcdserverpb.HashKVResponse", "compact_revision", 3, I64),
    ("etcdserverpb.HashKVResponse", "hash_revision", 4, I64),
    ("etcdserverpb.HashResponse", "hash", 2, U32),
    ("etcdserverpb.SnapshotResponse", "header", 1, MSG),
    ("etcdserverpb.SnapshotResponse", "remaining_bytes", 2, U64),
    ("etcdserverpb.SnapshotResponse", "blob", 3, BYTES),
    ("etcdserverpb.WatchRequest", "create_request", 1, MSG),
    ("etcdserverpb.WatchRequest", "cancel_request", 2, MSG),
    ("etcdserverpb.WatchRequest", "progress_request", 3, MSG),
    ("etcdserverpb.WatchCreateRequest", "key", 1, BYTES),
    ("etcdserverpb.WatchCreateRequest", "range_end", 2, BYTES),
    ("etcdserverpb.WatchCreateRequest", "start_revision", 3, I64),
    ("etcdserverpb.WatchCreateRequest", "progress_notify", 4, BOOL),
    ("etcdserverpb.WatchCreateRequest", "filters", 5, ENUM, REP),
    ("etcdserverpb.WatchCreateRequest", "prev_kv", 6, BOOL),
    ("etcdserverpb.WatchCreateRequest", "watch_id", 7, I64),
    ("etcdserverpb.WatchCreateRequest", "fragment", 8, BOOL),
    ("etcdserverpb.WatchCancelRequest", "watch_id", 1, I64),
    ("etcdserverpb.WatchResponse", "header", 1, MSG),
    ("etcdserverpb.WatchResponse", "watch_id", 2, I64),
    ("etcdserverpb.WatchResponse", "created", 3, BOOL),
    ("etcdserverpb.WatchResponse", "canceled", 4, BOOL),
    ("etcdserverpb.WatchResponse", "compact_revision", 5, I64),
    ("etcdserverpb.WatchResponse", "cancel_reason", 6, STRING),
    ("etcdserverpb.WatchResponse", "fragment", 7, BOOL),
    ("etcdserverpb.WatchResponse", "events", 11, MSG, REP),
    ("etcdserverpb.LeaseGrantRequest", "TTL", 1, I64),
    ("etcdserverpb.LeaseGrantRequest", "ID", 2, I64),
    ("etcdserverpb.LeaseGrantResponse", "ID", 2, I64),
    ("etcdserverpb.LeaseGrantResponse", "TTL", 3, I64),
    ("etcdserverpb.LeaseGrantResponse", "error", 4, STRING),
    ("etcdserverpb.LeaseRevokeRequest", "ID", 1, I64),
    ("etcdserverpb.LeaseCheckpoint", "ID", 1, I64),
    ("etcdserverpb.LeaseCheckpoint", "remaining_TTL", 2, I64),
    ("etcdserverpb.LeaseCheckpointRequest", "checkpoints", 1, MSG, REP),
    ("etcdserverpb.LeaseKeepAliveRequest", "ID", 1, I64),
    ("etcdserverpb.LeaseKeepAliveResponse", "ID", 2, I64),
    ("etcdserverpb.LeaseKeepAliveResponse", "TTL", 3, I64),
    ("etcdserverpb.LeaseTimeToLiveRequest", "ID", 1, I64),
    ("etcdserverpb.LeaseTimeToLiveRequest", "keys", 2, BOOL),
    ("etcdserverpb.LeaseTimeToLiveResponse", "ID", 2, I64),
    ("etcdserverpb.LeaseTimeToLiveResponse", "TTL", 3, I64),
    ("etcdserverpb.LeaseTimeToLiveResponse", "grantedTTL", 4, I64),
    ("etcdserverpb.LeaseTimeToLiveResponse", "keys", 5, BYTES, REP),
    ("etcdserverpb.LeaseStatus", "ID", 1, I64),
    ("etcdserverpb.LeaseLeasesResponse", "leases", 2, MSG, REP),
    ("etcdserverpb.Member", "ID", 1, U64),
    ("etcdserverpb.Member", "name", 2, STRING),
    ("etcdserverpb.Member", "peerURLs", 3, STRING, REP),
    ("etcdserverpb.Member", "clientURLs", 4, STRING, REP),
    ("etcdserverpb.Member", "isLearner", 5, BOOL),
    ("etcdserverpb.MemberAddRequest", "peerURLs", 1, STRING, REP),
    ("etcdserverpb.MemberAddRequest", "isLearner", 2, BOOL),
    ("etcdserverpb.MemberAddResponse", "member", 2, MSG),
    ("etcdserverpb.MemberAddResponse", "members", 3, MSG, REP),
    ("etcdserverpb.MemberRemoveRequest", "ID", 1, U64),
    ("etcdserverpb.MemberUpdateRequest", "ID", 1, U64),
    ("etcdserverpb.MemberUpdateRequest", "peerURLs", 2, STRING, REP),
    ("etcdserverpb.MemberListRequest", "linearizable", 1, BOOL),
    ("etcdserverpb.MemberListResponse", "members", 2, MSG, REP),
    ("etcdserverpb.MemberPromoteRequest", "ID", 1, U64),
    ("etcdserverpb.MoveLeaderRequest", "targetID", 1, U64),
    ("etcdserverpb.AlarmRequest", "action", 1, ENUM),
    ("etcdserverpb.AlarmRequest", "memberID", 2, U64),
    ("etcdserverpb.AlarmRequest", "alarm", 3, ENUM),
    ("etcdserverpb.AlarmMember", "memberID", 1, U64),
    ("etcdserverpb.AlarmMember", "alarm", 2, ENUM),
    ("etcdserverpb.AlarmResponse", "alarms", 2, MSG, REP),
    ("etcdserverpb.DowngradeRequest", "action", 1, ENUM),
    ("etcdserverpb.DowngradeRequest", "version", 2, STRING),
    ("etcdserverpb.DowngradeResponse", "version", 2, STRING),
    ("etcdserverpb.StatusResponse", "header", 1, MSG),
    ("etcdserverpb.StatusResponse", "version", 2, STRING),
    ("etcdserverpb.StatusResponse", "dbSize", 3, I64),
    ("etcdserverpb.StatusResponse", "leader", 4, U64),
    ("etcdserverpb.StatusResponse", "raftIndex", 5, U64),
    ("etcdserverpb.StatusResponse", "raftTerm", 6, U64),
    ("etcdserverpb.StatusResponse", "raftAppliedIndex", 7, U64),
    ("etcdserverpb.StatusResponse", "errors", 8, STRING, REP),
    ("etcdserverpb.StatusResponse", "dbSizeInUse", 9, I64),
    ("etcdserverpb.StatusResponse", "isLearner", 10, BOOL),
    ("etcdserverpb.AuthenticateRequest", "name", 1, STRING),
    ("etcdserverpb.AuthenticateRequest", "password", 2, STRING),
    ("etcdserverpb.AuthenticateResponse", "token", 2, STRING),
    ("etcdserverpb.AuthStatusResponse", "enabled", 2, BOOL),
    ("etcdserverpb.AuthStatusResponse", "authRevision", 3, U64),
    ("etcdserverpb.AuthUserAddRequest", "name", 1, STRING),
    ("etcdserverpb.AuthUserAddRequest", "password", 2, STRING),
    ("etcdserverpb.AuthUserAddRequest", "options", 3, MSG),
    ("etcdserverpb.AuthUserAddRequest", "hashedPassword", 4, STRING),
    ("etcdserverpb.AuthUserChangePasswordRequest", "hashedPassword", 3, STRING),
    ("etcdserverpb.AuthUserGrantRoleRequest", "user", 1, STRING),
    ("etcdserverpb.AuthUserGrantRoleRequest", "role", 2, STRING),
    ("etcdserverpb.AuthUserRevokeRoleRequest", "name", 1, STRING),
    ("etcdserverpb.AuthRoleGetRequest", "role", 1, STRING),
    ("etcdserverpb.AuthRoleGrantPermissionRequest", "name", 1, STRING),
    ("etcdserverpb.AuthRoleGrantPermissionRequest", "perm", 2, MSG),
    ("etcdserverpb.AuthRoleRevokePermissionRequest", "role", 1, STRING),
    ("etcdserverpb.AuthRoleRevokePermissionRequest", "key", 2, BYTES),
    ("etcdserverpb.AuthRoleRevokePermissionRequest", "range_end", 3, BYTES),
    ("etcdserverpb.AuthUserGetResponse", "roles", 2, STRING, REP),
    ("etcdserverpb.AuthUserListResponse", "users", 2, STRING, REP),
    ("etcdserverpb.AuthRoleListResponse", "roles", 2, STRING, REP),
    ("etcdserverpb.AuthRoleGetResponse", "perm", 2, MSG, REP),
    ("v3lockpb.LockRequest", "name", 1, BYTES),
    ("v3lockpb.LockRequest", "lease", 2, I64),
    ("v3lockpb.LockResponse", "header", 1, MSG),
    ("v3lockpb.LockResponse", "key", 2, BYTES),
    ("v3lockpb.UnlockRequest", "key", 1, BYTES),
    ("v3lockpb.UnlockResponse", "header", 1, MSG),
    ("v3electionpb.CampaignRequest", "name", 1, BYTES),
    ("v3electionpb.CampaignRequest", "lease", 2, I64),
    ("v3electionpb.CampaignRequest", "value", 3, BYTES),
    ("v3electionpb.CampaignResponse", "header", 1, MSG),
    ("v3electionpb.CampaignResponse", "leader", 2, MSG),
    ("v3electionpb.LeaderKey", "name", 1, BYTES),
    ("v3electionpb.LeaderKey", "key", 2, BYTES),
    ("v3electionpb.LeaderKey", "rev", 3, I64),
    ("v3electionpb.LeaderKey", "lease", 4, I64),
    ("v3electionpb.LeaderRequest", "name", 1, BYTES),
    ("v3electionpb.LeaderResponse", "header", 1, MSG),
    ("v3electionpb.LeaderResponse", "kv", 2, MSG),
    ("v3electionpb.ResignRequest", "leader", 1, MSG),
    ("v3electionpb.ResignResponse", "header", 1, MSG),
    ("v3electionpb.ProclaimRequest", "leader", 1, MSG),
    ("v3electionpb.ProclaimRequest", "value", 2, BYTES),
    ("v3electionpb.ProclaimResponse", "header", 1, MSG),
]


@pytest.mark.parametrize("row", FIELDS, ids=lambda r: f"{r[0]}.{r[1]}")
def test_field_numbers_and_types(row: tuple) -> None:
    message, name, number, ftype, *rest = row
    field = _message(message).fields_by_name.get(name)
    assert field is not None, f"{message} has no field {name!r}"
    assert field.number == number
    assert field.type == ftype
    assert field.is_repeated == (rest == [REP])


# Every *Response message carries the ResponseHeader at field 1.
@pytest.mark.parametrize(
    "message",
    sorted(
        m.full_name
        for pkg in MODULES
        for m in _pb2(pkg).DESCRIPTOR.message_types_by_name.values()
        if m.name.endswith("Response")
    ),
)
def test_every_response_has_header_first(message: str) -> None:
    field = _message(message).fields_by_number.get(1)
    assert field is not None and field.name == "header"
    assert field.message_type is not None
    assert field.message_type.full_name == "etcdserverpb.ResponseHeader"


def test_message_field_types_point_at_etcd_messages() -> None:
    kv = "mvccpb.KeyValue"

    def target(message: str, field: str) -> str:
        message_type = _message(message).fields_by_name[field].message_type
        assert message_type is not None
        return str(message_type.full_name)

    assert target("etcdserverpb.RangeResponse", "kvs") == kv
    assert target("etcdserverpb.WatchResponse", "events") == "mvccpb.Event"
    assert target("etcdserverpb.AuthRoleGetResponse", "perm") == "authpb.Permission"
    assert target("v3electionpb.LeaderResponse", "kv") == kv


def test_oneofs() -> None:
    def members(message: str, oneof: str) -> list[str]:
        return [f.name for f in _message(message).oneofs_by_name[oneof].fields]

    assert members("etcdserverpb.RequestOp", "request") == [
        "request_range",
        "request_put",
        "request_delete_range",
        "request_txn",
    ]
    assert members("etcdserverpb.ResponseOp", "response") == [
        "response_range",
        "response_put",
        "response_delete_range",
        "response_txn",
    ]
    assert members("etcdserverpb.Compare", "target_union") == [
        "version",
        "create_revision",
        "mod_revision",
        "value",
        "lease",
    ]
    assert members("etcdserverpb.WatchRequest", "request_union") == [
        "create_request",
        "cancel_request",
        "progress_request",
    ]
    assert _message("etcdserverpb.Compare").fields_by_name["range_end"].containing_oneof is None


ENUMS = {
    "mvccpb.Event.EventType": {"PUT": 0, "DELETE": 1},
    "authpb.Permission.Type": {"READ": 0, "WRITE": 1, "READWRITE": 2},
    "etcdserverpb.RangeRequest.SortOrder": {"NONE": 0, "ASCEND": 1, "DESCEND": 2},
    "etcdserverpb.RangeRequest.SortTarget": {
        "KEY": 0,
        "VERSION": 1,
        "CREATE": 2,
        "MOD": 3,
        "VALUE": 4,
    },
    "etcdserverpb.Compare.CompareResult": {"EQUAL": 0, "GREATER": 1, "LESS": 2, "NOT_EQUAL": 3},
    "etcdserverpb.Compare.CompareTarget": {
        "VERSION": 0,
        "CREATE": 1,
        "MOD": 2,
        "VALUE": 3,
        "LEASE": 4,
    },
    "etcdserverpb.WatchCreateRequest.FilterType": {"NOPUT": 0, "NODELETE": 1},
    "etcdserverpb.AlarmType": {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2},
    "etcdserverpb.AlarmRequest.AlarmAction": {"GET": 0, "ACTIVATE": 1, "DEACTIVATE": 2},
    "etcdserverpb.DowngradeRequest.DowngradeAction": {"VALIDATE": 0, "ENABLE": 1, "CANCEL": 2},
}


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_enum_values(enum: str) -> None:
    package = enum.split(".", 1)[0]
    enum_desc = _pb2(package).DESCRIPTOR.pool.FindEnumTypeByName(enum)
    assert {v.name: v.number for v in enum_desc.values} == ENUMS[enum]


def test_json_names_keep_etcd_spelling() -> None:
    """etcdctl -w json prints proto field names; ours must be spelled identically."""
    from google.protobuf import json_format

    rpc = _pb2("etcdserverpb")
    status = rpc.StatusResponse(
        header=rpc.ResponseHeader(cluster_id=1, member_id=2, revision=3, raft_term=4),
        dbSize=5,
        raftIndex=6,
        raftAppliedIndex=7,
        dbSizeInUse=8,
        isLearner=True,
    )
    as_json = json_format.MessageToDict(status, preserving_proto_field_name=True)
    assert set(as_json) == {
        "header",
        "dbSize",
        "raftIndex",
        "raftAppliedIndex",
        "dbSizeInUse",
        "isLearner",
    }
    assert set(as_json["header"]) == {"cluster_id", "member_id", "revision", "raft_term"}
    member = json_format.MessageToDict(
        rpc.Member(ID=9, name="a", peerURLs=["p"], clientURLs=["c"], isLearner=True),
        preserving_proto_field_name=True,
    )
    assert set(member) == {"ID", "name", "peerURLs", "clientURLs", "isLearner"}


# ------------------------------------------------------------- wire samples


def test_hand_encoded_wire_samples_decode() -> None:
    """Bytes laid out by hand from the reference field numbers (not by our encoder)."""
    rpc = _pb2("etcdserverpb")
    # RangeRequest{key="foo", range_end="fop", limit=10, serializable, keys_only}
    req = rpc.RangeRequest.FromString(bytes.fromhex("0a03666f6f 1203666f70 180a 3801 4001"))
    assert (req.key, req.range_end, req.limit) == (b"foo", b"fop", 10)
    assert req.serializable and req.keys_only and not req.count_only
    # Compare{target=VALUE, key="k", value="v", range_end="l"} (range_end is tag 64: 0x82 0x04)
    cmp = rpc.Compare.FromString(bytes.fromhex("1003 1a016b 3a0176 8204016c"))
    assert cmp.target == rpc.Compare.VALUE and cmp.WhichOneof("target_union") == "value"
    assert (cmp.key, cmp.value, cmp.range_end) == (b"k", b"v", b"l")
    # WatchResponse{header{revision=7}, watch_id=1, events=[{type=DELETE, kv{key="a"}}]}
    wr = rpc.WatchResponse.FromString(bytes.fromhex("0a021807 1001 5a07 0801 1203 0a0161"))
    assert wr.header.revision == 7 and wr.watch_id == 1
    assert wr.events[0].type == _pb2("mvccpb").Event.DELETE and wr.events[0].kv.key == b"a"
    # LeaseKeepAliveResponse{ID=5, TTL=60}
    ka = rpc.LeaseKeepAliveResponse.FromString(bytes.fromhex("1005 183c"))
    assert (ka.ID, ka.TTL) == (5, 60)
    # And our encoder produces exactly those bytes back.
    assert ka.SerializeToString() == bytes.fromhex("1005183c")


# ------------------------------------ cross-check against etcdctl's descriptors

ETCDCTL = shutil.which("etcdctl") or "/usr/bin/etcdctl"


def _etcdctl_descriptors() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The gzipped FileDescriptorProtos that etcd's Go code registers, read from etcdctl."""
    path = Path(ETCDCTL)
    if not path.is_file():
        pytest.skip("etcdctl not installed")
    data = path.read_bytes()
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    start = 0
    while (start := data.find(b"\x1f\x8b\x08", start)) >= 0:
        try:
            raw = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(
                data[start : start + (1 << 20)]
            )
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
        except Exception:  # noqa: BLE001 - not a descriptor blob
            fd = None
        if fd is not None and fd.package in ("etcdserverpb", "mvccpb", "authpb"):
            found.setdefault(fd.name, fd)
        start += 3
    wanted = {"rpc.proto", "kv.proto", "auth.proto"}
    if not wanted <= set(found):
        pytest.skip(f"etcdctl descriptors not found (have {sorted(found)})")
    return {name: found[name] for name in wanted}


def _flatten(
    messages: Iterable[descriptor_pb2.DescriptorProto], prefix: str
) -> dict[str, descriptor_pb2.DescriptorProto]:
    out: dict[str, descriptor_pb2.DescriptorProto] = {}
    for m in messages:
        out[prefix + m.name] = m
        out.update(_flatten(m.nested_type, prefix + m.name + "."))
    return out


def test_matches_etcdctl_embedded_descriptors() -> None:
    theirs = _etcdctl_descriptors()
    for fd in theirs.values():
        mine = _pb2(fd.package).DESCRIPTOR
        for full_name, msg in _flatten(fd.message_type, fd.package + ".").items():
            ours = mine.pool.FindMessageTypeByName(full_name)
            for f in msg.field:
                our = ours.fields_by_name.get(f.name)
                assert our is not None, f"{full_name}.{f.name} missing"
                repeated = f.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
                assert (our.number, our.type, our.is_repeated) == (f.number, f.type, repeated), (
                    f"{full_name}.{f.name}"
                )
                if f.type_name:
                    target = (our.message_type or our.enum_type).full_name
                    assert target == f.type_name.lstrip(".")
                if f.HasField("oneof_index"):
                    assert our.containing_oneof is not None
                    assert our.containing_oneof.name == msg.oneof_decl[f.oneof_index].name
            for e in msg.enum_type:
                our_enum = ours.enum_types_by_name[e.name]
                assert {v.name: v.number for v in our_enum.values} == {
                    v.name: v.number for v in e.value
                }
        for e in fd.enum_type:
            our_enum = mine.enum_types_by_name[e.name]
            assert {v.name: v.number for v in our_enum.values} == {
                v.name: v.number for v in e.value
            }
        for svc in fd.service:
            ours_svc = mine.services_by_name[svc.name]
            for m in svc.method:
                our_m = ours_svc.methods_by_name[m.name]
                assert our_m.input_type.full_name == m.input_type.lstrip(".")
                assert our_m.output_type.full_name == m.output_type.lstrip(".")
                assert our_m.client_streaming == m.client_streaming
                assert our_m.server_streaming == m.server_streaming


def test_wire_roundtrip_with_etcdctl_descriptors() -> None:
    """Encode with etcdctl's own schema, decode with ours, and vice versa."""
    theirs = _etcdctl_descriptors()
    pool = descriptor_pool.DescriptorPool()
    for name in ("kv.proto", "auth.proto", "rpc.proto"):
        fd = descriptor_pb2.FileDescriptorProto()
        fd.CopyFrom(theirs[name])
        # Drop gogoproto / http annotation imports and options; they do not affect the wire.
        keep = [d for d in fd.dependency if d in ("kv.proto", "auth.proto")]
        del fd.dependency[:]
        fd.dependency.extend(keep)
        del fd.public_dependency[:]
        del fd.weak_dependency[:]
        fd.ClearField("options")
        for msg in _flatten(fd.message_type, "").values():
            msg.ClearField("options")
            for f in msg.field:
                f.ClearField("options")
        for svc in fd.service:
            for m in svc.method:
                m.ClearField("options")
        pool.Add(fd)

    def their_class(full_name: str) -> Any:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))

    rpc = _pb2("etcdserverpb")
    their_txn = their_class("etcdserverpb.TxnRequest")()
    c = their_txn.compare.add()
    c.result, c.target, c.key, c.mod_revision, c.range_end = 3, 2, b"k", 42, b"l"
    put = their_txn.success.add().request_put
    put.key, put.value, put.lease, put.prev_kv, put.ignore_lease = b"k", b"v", 7, True, True
    rng = their_txn.failure.add().request_range
    rng.key, rng.sort_order, rng.sort_target, rng.serializable, rng.max_create_revision = (
        b"a",
        2,
        4,
        True,
        99,
    )
    ours = rpc.TxnRequest.FromString(their_txn.SerializeToString())
    assert ours.compare[0].result == rpc.Compare.NOT_EQUAL
    assert ours.compare[0].target == rpc.Compare.MOD and ours.compare[0].mod_revision == 42
    assert ours.compare[0].range_end == b"l"
    assert ours.success[0].request_put.ignore_lease and ours.success[0].request_put.lease == 7
    r = ours.failure[0].request_range
    assert (r.sort_order, r.sort_target) == (rpc.RangeRequest.DESCEND, rpc.RangeRequest.VALUE)
    assert r.serializable and r.max_create_revision == 99
    assert ours.SerializeToString() == their_txn.SerializeToString()

    status = rpc.StatusResponse(
        header=rpc.ResponseHeader(cluster_id=11, member_id=12, revision=13, raft_term=14),
        version="3.4.0",
        dbSize=1 << 20,
        leader=12,
        raftIndex=100,
        raftTerm=14,
        raftAppliedIndex=99,
        errors=["x"],
        dbSizeInUse=1 << 19,
        isLearner=True,
    )
    theirs_status = their_class("etcdserverpb.StatusResponse").FromString(
        status.SerializeToString()
    )
    assert theirs_status.header.member_id == 12 and theirs_status.raftAppliedIndex == 99
    assert theirs_status.dbSizeInUse == 1 << 19 and theirs_status.isLearner
    # Nothing we send is unknown to etcdctl's schema: re-encoding loses nothing.
    assert theirs_status.SerializeToString() == status.SerializeToString()
