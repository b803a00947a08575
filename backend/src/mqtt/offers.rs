//! Offers out: an offer is recorded per device before it is published, with the
//! artifacts its manifest names, because that record is what the chunk service
//! ([`super::chunks`]) checks. Status reports come in through [`super::reports`].

use mota_proto::topic::{Kind, Topic};
use mota_proto::{Envelope, Manifest, Wire};
use sqlx::AnyConnection;

use super::publish::{PublishError, Publisher};
use crate::blobs::hex;

/// Why an offer was not published or a message not answered.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The envelope or its manifest does not parse.
    #[error("offer envelope: {0}")]
    Envelope(#[from] mota_proto::DecodeError),
    /// A message could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] mota_proto::EncodeError),
    /// The device id is not a valid topic level.
    #[error("device id: {0}")]
    Topic(#[from] mota_proto::topic::TopicError),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The message could not be queued.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Records that `device` is offered `envelope` (the `device_offers` row the chunk
/// service checks), committed before the offer is published: a device answers an offer
/// with chunk requests at once, and a row still inside the publishing transaction would
/// get them refused. A record whose offer is then not published (its claim lost to an
/// abort) only lets the device fetch artifacts of a manifest signed for it, which it
/// never received. Returns the manifest's SHA-256 (hex).
pub async fn record_offer(
    conn: &mut AnyConnection,
    device: &str,
    envelope: &[u8],
    now: i64,
) -> Result<String, OfferError> {
    let parsed = Envelope::parse(envelope)?;
    let manifest = Manifest::parse(parsed.body)?;
    let manifest_sha256 = hex(&mota_proto::Digest::of(parsed.body).0);
    let rollout = i64::try_from(manifest.rollout_id).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO device_offers (device_id, manifest_sha256, rollout_id, image_sha256, patch_sha256, set_sha256, \
         offered_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (device_id, manifest_sha256) DO UPDATE SET offered_at = excluded.offered_at",
    )
    .bind(device)
    .bind(&manifest_sha256)
    .bind(rollout)
    .bind(hex(&manifest.image.sha256.0))
    .bind(manifest.delta.map(|d| hex(&d.patch_sha256.0)))
    .bind(manifest.validation.map(|v| hex(&v.set_sha256.0)))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(manifest_sha256)
}

/// Publishes `envelope` retained on `device`'s offer topic (recorded first with
/// [`record_offer`]).
pub async fn publish_offer(client: &dyn Publisher, device: &str, envelope: &[u8]) -> Result<(), OfferError> {
    let topic = Topic::new(device, Kind::Offer)?.to_string();
    client.publish(topic, envelope.to_vec(), true).await?;
    Ok(())
}
