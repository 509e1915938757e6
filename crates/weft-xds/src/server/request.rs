//! State-of-the-world requests as the server reads them.
//!
//! A client repeats its whole `resource_names` list (a sidecar's EDS request names every cluster,
//! thousands in a large mesh) and, as Envoy does unless `set_node_on_first_message_only` is set,
//! its node in every request, ACKs included. Decoding those into a `String` per name and a `Node`
//! per request was most of what an ACK cost the control plane, though an ACK almost always
//! repeats what the stream already holds. [`SotwRequest`] has the same fields on the wire as
//! Envoy's `DiscoveryRequest`, but keeps each name as a slice of the received message and the
//! node as its bytes: names are compared with the held subscription as bytes and made strings
//! only when they differ; the node is decoded once, when the stream starts.

use bytes::{Buf, BufMut, Bytes};
use prost::DecodeError;
use prost::encoding::{DecodeContext, WireType, bytes as pbytes, message, skip_field, string};

use crate::pb::envoy::config::core::v3::Node;
use crate::pb::google::rpc::Status as RpcStatus;

const VERSION_INFO: u32 = 1;
const NODE: u32 = 2;
const RESOURCE_NAMES: u32 = 3;
const TYPE_URL: u32 = 4;
const RESPONSE_NONCE: u32 = 5;
const ERROR_DETAIL: u32 = 6;

/// `envoy.service.discovery.v3.DiscoveryRequest` with its names and node left undecoded
/// (fields it does not use, such as `resource_locators`, are skipped).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SotwRequest {
    pub version_info: String,
    /// The node's encoding (each occurrence on the wire; they merge, as protobuf's do).
    node: Vec<Bytes>,
    /// Each `resource_names` entry as received (not yet checked to be UTF-8).
    names: Vec<Bytes>,
    pub type_url: String,
    pub response_nonce: String,
    pub error_detail: Option<RpcStatus>,
}

/// A resource name that is not UTF-8 (protobuf strings must be).
#[derive(Debug, thiserror::Error)]
#[error("resource_names[{index}] is not UTF-8: {source}")]
pub struct NameError {
    pub index: usize,
    pub source: std::str::Utf8Error,
}

impl SotwRequest {
    /// The node, decoded (None when the request carries none).
    pub fn node(&self) -> Result<Option<Node>, DecodeError> {
        if self.node.is_empty() {
            return Ok(None);
        }
        let mut node = Node::default();
        for piece in &self.node {
            prost::Message::merge(&mut node, piece.clone())?;
        }
        Ok(Some(node))
    }

    /// The names as received, for comparing without decoding.
    pub fn raw_names(&self) -> &[Bytes] {
        &self.names
    }

    /// The names as strings.
    pub fn names(&self) -> Result<Vec<String>, NameError> {
        self.names
            .iter()
            .enumerate()
            .map(|(index, n)| {
                std::str::from_utf8(n)
                    .map(str::to_string)
                    .map_err(|source| NameError { index, source })
            })
            .collect()
    }
}

impl prost::Message for SotwRequest {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if !self.version_info.is_empty() {
            string::encode(VERSION_INFO, &self.version_info, buf);
        }
        for n in &self.node {
            pbytes::encode(NODE, n, buf);
        }
        for n in &self.names {
            pbytes::encode(RESOURCE_NAMES, n, buf);
        }
        if !self.type_url.is_empty() {
            string::encode(TYPE_URL, &self.type_url, buf);
        }
        if !self.response_nonce.is_empty() {
            string::encode(RESPONSE_NONCE, &self.response_nonce, buf);
        }
        if let Some(e) = &self.error_detail {
            message::encode(ERROR_DETAIL, e, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            VERSION_INFO => string::merge(wire_type, &mut self.version_info, buf, ctx),
            // Decoded from `Bytes`, `copy_to_bytes` is a reference to the received message,
            // not a copy.
            NODE | RESOURCE_NAMES => {
                let mut b = Bytes::new();
                pbytes::merge(wire_type, &mut b, buf, ctx)?;
                if tag == NODE {
                    self.node.push(b);
                } else {
                    self.names.push(b);
                }
                Ok(())
            }
            TYPE_URL => string::merge(wire_type, &mut self.type_url, buf, ctx),
            RESPONSE_NONCE => string::merge(wire_type, &mut self.response_nonce, buf, ctx),
            ERROR_DETAIL => message::merge(
                wire_type,
                self.error_detail.get_or_insert_with(RpcStatus::default),
                buf,
                ctx,
            ),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let s = |tag, v: &String| {
            if v.is_empty() {
                0
            } else {
                string::encoded_len(tag, v)
            }
        };
        s(VERSION_INFO, &self.version_info)
            + self
                .node
                .iter()
                .map(|n| pbytes::encoded_len(NODE, n))
                .sum::<usize>()
            + self
                .names
                .iter()
                .map(|n| pbytes::encoded_len(RESOURCE_NAMES, n))
                .sum::<usize>()
            + s(TYPE_URL, &self.type_url)
            + s(RESPONSE_NONCE, &self.response_nonce)
            + self
                .error_detail
                .as_ref()
                .map_or(0, |e| message::encoded_len(ERROR_DETAIL, e))
    }

    fn clear(&mut self) {
        *self = SotwRequest::default();
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb::envoy::service::discovery::v3::DiscoveryRequest;

    fn envoy_request() -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: "v7".into(),
            node: Some(Node {
                id: "sidecar~10.0.0.1~a.ns~ns.svc.cluster.local".into(),
                cluster: "a.ns".into(),
                ..Default::default()
            }),
            resource_names: vec!["outbound|80||a".into(), "outbound|80||b".into(), "ü".into()],
            type_url: crate::types::ENDPOINT.into(),
            response_nonce: "n1".into(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: "refused".into(),
                details: Vec::new(),
            }),
            resource_locators: vec![Default::default()],
        }
    }

    #[test]
    fn reads_what_envoy_sends_and_writes_it_back() {
        let sent = envoy_request();
        let bytes = Bytes::from(sent.encode_to_vec());
        let got = SotwRequest::decode(bytes.clone()).unwrap();
        assert_eq!(got.version_info, "v7");
        assert_eq!(got.type_url, sent.type_url);
        assert_eq!(got.response_nonce, "n1");
        assert_eq!(got.error_detail, sent.error_detail);
        assert_eq!(got.node().unwrap(), sent.node);
        assert_eq!(got.names().unwrap(), sent.resource_names);
        // The names point into the received message.
        let range = bytes.as_ptr_range();
        assert!(got.raw_names().iter().all(|n| range.contains(&n.as_ptr())));
        // Written back, it is Envoy's request without the field it skips.
        let again = DiscoveryRequest::decode(got.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            again,
            DiscoveryRequest {
                resource_locators: Vec::new(),
                ..sent
            }
        );
        assert_eq!(got.encoded_len(), got.encode_to_vec().len());
    }

    #[test]
    fn a_node_sent_in_pieces_merges_and_a_bad_name_is_named() {
        let mut wire = DiscoveryRequest {
            node: Some(Node {
                id: "first".into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        wire.extend(
            DiscoveryRequest {
                node: Some(Node {
                    cluster: "second".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        // resource_names (field 3, length-delimited) with invalid UTF-8, after a good one.
        wire.extend([0x1a, 1, b'a', 0x1a, 2, 0xff, 0xfe]);
        let got = SotwRequest::decode(Bytes::from(wire)).unwrap();
        let node = got.node().unwrap().unwrap();
        assert_eq!(
            (node.id.as_str(), node.cluster.as_str()),
            ("first", "second")
        );
        let err = got.names().unwrap_err();
        assert_eq!(err.index, 1);
        assert!(
            err.to_string()
                .starts_with("resource_names[1] is not UTF-8"),
            "{err}"
        );
        // A truncated name is a decode error, as prost's own.
        assert!(SotwRequest::decode(Bytes::from_static(&[0x1a, 5, b'a'])).is_err());
        assert_eq!(SotwRequest::default().node().unwrap(), None);
    }
}
