//! Chunked file transfers over gRPC streams, shared by artifacts and caches:
//! receiving an upload into a part file (size limit, sha256, fsync) and
//! sending a file as a header plus data chunks. The callers own naming,
//! authorisation and what happens to the file afterwards.

use crate::error::CoreError;
use futures::{Stream, StreamExt};
use osprey_proto::v1;
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Status;

/// Largest chunk of a download.
const DOWNLOAD_CHUNK: usize = 1 << 20;

/// One message of an upload after its header.
pub enum UploadPart {
    Data(Vec<u8>),
    Trailer(v1::ArtifactTrailer),
    /// A second header, or an empty message.
    Unexpected,
}

impl From<v1::UploadArtifactRequest> for UploadPart {
    fn from(message: v1::UploadArtifactRequest) -> Self {
        use v1::upload_artifact_request::Part;
        match message.part {
            Some(Part::Data(data)) => UploadPart::Data(data),
            Some(Part::Trailer(trailer)) => UploadPart::Trailer(trailer),
            Some(Part::Header(_)) | None => UploadPart::Unexpected,
        }
    }
}

impl From<v1::UploadCacheRequest> for UploadPart {
    fn from(message: v1::UploadCacheRequest) -> Self {
        use v1::upload_cache_request::Part;
        match message.part {
            Some(Part::Data(data)) => UploadPart::Data(data),
            Some(Part::Trailer(trailer)) => UploadPart::Trailer(trailer),
            Some(Part::Header(_)) | None => UploadPart::Unexpected,
        }
    }
}

/// What arrived and was checked against the sender's trailer: its size and
/// sha256.
pub struct Received {
    pub size: u64,
    pub sha256: String,
}

fn internal(context: &str, error: impl std::fmt::Display) -> Status {
    Status::from(CoreError::Internal(format!("{context}: {error}")))
}

/// Writes the data parts to `part` until the trailer, refusing more than
/// `limit` bytes and bytes that differ from what the trailer says (`what`
/// names the archive in errors). On any error the part file is removed.
pub async fn receive(
    mut inbound: impl Stream<Item = Result<UploadPart, Status>> + Unpin,
    part: &Path,
    limit: u64,
    what: &str,
) -> Result<Received, Status> {
    let result = receive_into(&mut inbound, part, limit, what).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(part).await;
    }
    result
}

async fn receive_into(
    inbound: &mut (impl Stream<Item = Result<UploadPart, Status>> + Unpin),
    part: &Path,
    limit: u64,
    what: &str,
) -> Result<Received, Status> {
    let mut file = tokio::fs::File::create(part)
        .await
        .map_err(|error| internal(&format!("creating {what} file"), error))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let trailer = loop {
        match inbound.next().await.transpose()? {
            Some(UploadPart::Data(data)) => {
                size += data.len() as u64;
                if size > limit {
                    return Err(Status::resource_exhausted(format!(
                        "{what} archive larger than {limit} bytes"
                    )));
                }
                hasher.update(&data);
                file.write_all(&data)
                    .await
                    .map_err(|error| internal(&format!("writing {what}"), error))?;
            }
            Some(UploadPart::Trailer(trailer)) => break trailer,
            Some(UploadPart::Unexpected) => {
                return Err(Status::invalid_argument("unexpected upload message"))
            }
            None => return Err(Status::invalid_argument("upload ended without a trailer")),
        }
    };
    let sha256 = hex::encode(hasher.finalize());
    if trailer.size != size || !trailer.sha256.eq_ignore_ascii_case(&sha256) {
        return Err(Status::invalid_argument(format!(
            "{what} digest mismatch: received {size} bytes with sha256 {sha256}, trailer says {} bytes with {}",
            trailer.size, trailer.sha256
        )));
    }
    file.sync_all()
        .await
        .map_err(|error| internal(&format!("syncing {what}"), error))?;
    Ok(Received { size, sha256 })
}

/// A download: `header(size, sha256)` first, then the reader's first `size`
/// bytes in chunks made into messages by `data` (what follows them, such as
/// a cache's record, is not sent).
pub fn send<T: Send + 'static>(
    file: crate::artifact_store::ObjectReader,
    size: u64,
    sha256: String,
    header: fn(v1::ArtifactTrailer) -> T,
    data: fn(Vec<u8>) -> T,
) -> impl Stream<Item = Result<T, Status>> + Send + 'static {
    async_stream::try_stream! {
        yield header(v1::ArtifactTrailer { size, sha256 });
        let mut file = file.take(size);
        let mut buffer = vec![0u8; DOWNLOAD_CHUNK];
        loop {
            let read = file.read(&mut buffer).await.map_err(|error| internal("reading a download", error))?;
            if read == 0 {
                break;
            }
            yield data(buffer[..read].to_vec());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trailer(data: &[u8]) -> UploadPart {
        UploadPart::Trailer(v1::ArtifactTrailer {
            size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(data)),
        })
    }

    async fn upload(parts: Vec<UploadPart>, limit: u64) -> (Result<Received, Status>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("upload.part");
        let stream = futures::stream::iter(parts.into_iter().map(Ok));
        let result = receive(stream, &part, limit, "artifact").await;
        (result, part.exists())
    }

    #[tokio::test]
    async fn an_upload_is_written_hashed_and_its_trailer_returned() {
        let parts = vec![
            UploadPart::Data(b"hel".to_vec()),
            UploadPart::Data(b"lo".to_vec()),
            trailer(b"hello"),
        ];
        let (result, kept) = upload(parts, 10).await;
        let received = result.unwrap();
        assert_eq!(received.size, 5);
        assert_eq!(received.sha256, hex::encode(Sha256::digest(b"hello")));
        assert!(kept);
    }

    #[tokio::test]
    async fn oversized_truncated_or_confused_uploads_are_refused_and_removed() {
        let (result, kept) =
            upload(vec![UploadPart::Data(vec![0; 11]), trailer(&[0; 11])], 10).await;
        assert_eq!(result.err().unwrap().code(), tonic::Code::ResourceExhausted);
        assert!(!kept);
        let (result, kept) = upload(vec![UploadPart::Data(vec![0; 3])], 10).await;
        assert_eq!(result.err().unwrap().code(), tonic::Code::InvalidArgument);
        assert!(!kept);
        let (result, kept) = upload(vec![UploadPart::Unexpected], 10).await;
        assert_eq!(result.err().unwrap().code(), tonic::Code::InvalidArgument);
        assert!(!kept);
        // Bytes that differ from the trailer's digest.
        let (result, kept) = upload(
            vec![UploadPart::Data(b"hellO".to_vec()), trailer(b"hello")],
            10,
        )
        .await;
        assert_eq!(result.err().unwrap().code(), tonic::Code::InvalidArgument);
        assert!(!kept);
    }
}
