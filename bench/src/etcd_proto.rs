//! The handful of etcd v3 gRPC messages the benchmark sends, written by hand so the
//! crate builds without `protoc`. Field tags are copied from etcd's
//! `api/etcdserverpb/rpc.proto`, `api/mvccpb/kv.proto` and
//! `server/etcdserver/api/v3lock/v3lockpb/v3lock.proto` (stable since etcd 3.0–3.4);
//! fields the benchmark never reads are left out, which protobuf allows (unknown
//! fields are skipped on decode). Owns no behaviour: see `etcd.rs` for the calls.

/// gRPC method paths (`/package.Service/Method`).
pub mod path {
    pub const PUT: &str = "/etcdserverpb.KV/Put";
    pub const RANGE: &str = "/etcdserverpb.KV/Range";
    pub const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
    pub const LEASE_REVOKE: &str = "/etcdserverpb.Lease/LeaseRevoke";
    pub const STATUS: &str = "/etcdserverpb.Maintenance/Status";
    pub const LOCK: &str = "/v3lockpb.Lock/Lock";
    pub const UNLOCK: &str = "/v3lockpb.Lock/Unlock";
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// `false` (the default) is a linearizable read; `true` a member-local one.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    /// Seconds.
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    /// 0: the server picks.
    #[prost(int64, tag = "2")]
    pub id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeRequest {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseRevokeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    /// Member id of the leader this member believes in (0: none).
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
    #[prost(uint64, tag = "6")]
    pub raft_term: u64,
}

/// `v3lockpb.LockRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LockRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub lease: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LockResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The key that exists while the caller holds the lock; pass it to Unlock.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UnlockResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn put_request_encodes_with_etcd_field_tags() {
        let request = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 5,
        };
        // tag 1 bytes "k", tag 2 bytes "v", tag 3 varint 5.
        assert_eq!(
            request.encode_to_vec(),
            vec![0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 5]
        );
    }

    #[test]
    fn a_linearizable_range_sends_no_serializable_flag() {
        let linearizable = RangeRequest {
            key: b"k".to_vec(),
            serializable: false,
        };
        assert_eq!(linearizable.encode_to_vec(), vec![0x0a, 1, b'k']);
        let local = RangeRequest {
            key: b"k".to_vec(),
            serializable: true,
        };
        assert_eq!(local.encode_to_vec(), vec![0x0a, 1, b'k', 0x38, 1]);
    }
}
