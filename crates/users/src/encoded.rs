//! Responses encoded once and served many times.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;
use connectrpc::{CodecFormat, ConnectError, Encodable};

/// A response message already encoded as protobuf and as JSON, so that
/// serving it again costs a reference-count increment per request.
pub struct Encoded<M> {
    proto: Bytes,
    json: Bytes,
    _message: PhantomData<fn() -> M>,
}

impl<M: Encodable<M>> Encoded<M> {
    pub fn new(message: &M) -> Result<Arc<Self>, ConnectError> {
        Ok(Arc::new(Self {
            proto: message.encode(CodecFormat::Proto)?,
            json: message.encode(CodecFormat::Json)?,
            _message: PhantomData,
        }))
    }
}

/// The body of a response served from an [`Encoded`].
pub struct EncodedBody<M>(pub Arc<Encoded<M>>);

impl<M> Encodable<M> for EncodedBody<M> {
    fn encode(&self, codec: CodecFormat) -> Result<Bytes, ConnectError> {
        match codec {
            CodecFormat::Proto => Ok(self.0.proto.clone()),
            CodecFormat::Json => Ok(self.0.json.clone()),
            other => Err(ConnectError::unimplemented(format!(
                "codec {other} is not supported"
            ))),
        }
    }
}
