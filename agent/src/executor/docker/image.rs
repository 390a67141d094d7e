//! Getting a job's or a service's image onto the engine under the pull policy,
//! with every pull bounded in time: an image that cannot be had becomes a
//! reason naming it, never a hang.

use super::config::PullPolicy;
use bollard::errors::Error as BollardError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use std::time::Duration;

/// Makes `image` available locally, or says why it is not (the reason names the image).
pub(crate) async fn ensure_image(
    docker: &Docker,
    image: &str,
    policy: PullPolicy,
    pull_timeout: Duration,
) -> Result<(), String> {
    let present = match docker.inspect_image(image).await {
        Ok(_) => true,
        Err(error) if is_not_found(&error) => false,
        Err(error) => return Err(format!("image {image} not available: {error}")),
    };
    let must_pull = match policy {
        PullPolicy::Always => true,
        PullPolicy::IfNotPresent => !present,
        PullPolicy::Never => false,
    };
    if !must_pull {
        return if present {
            Ok(())
        } else {
            Err(format!(
                "image {image} not available: not present locally and the pull policy is never"
            ))
        };
    }
    tracing::info!(image, "pulling image");
    match tokio::time::timeout(pull_timeout, pull(docker, image)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("image {image} not available: pull failed: {error}")),
        Err(_) => Err(format!(
            "image {image} not available: pull did not finish within {}s",
            pull_timeout.as_secs()
        )),
    }
}

async fn pull(docker: &Docker, image: &str) -> Result<(), BollardError> {
    let (from_image, tag) = split_tag(image);
    let mut options = CreateImageOptionsBuilder::default().from_image(from_image);
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    let mut progress = docker.create_image(Some(options.build()), None, None);
    while let Some(step) = progress.next().await {
        step?;
    }
    Ok(())
}

/// Splits `name[:tag]` so a pull without a tag asks for `latest` (the API pulls
/// every tag when none is given). A digest stays part of the name.
fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => (
            &image[..last_slash + colon],
            Some(&image[last_slash + colon + 1..]),
        ),
        None => (image, Some("latest")),
    }
}

pub(crate) fn is_not_found(error: &BollardError) -> bool {
    matches!(
        error,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pulls_name_a_tag() {
        assert_eq!(split_tag("alpine"), ("alpine", Some("latest")));
        assert_eq!(split_tag("alpine:3.19"), ("alpine", Some("3.19")));
        assert_eq!(
            split_tag("registry:5000/team/app"),
            ("registry:5000/team/app", Some("latest"))
        );
        assert_eq!(
            split_tag("registry:5000/team/app:1"),
            ("registry:5000/team/app", Some("1"))
        );
        assert_eq!(split_tag("alpine@sha256:abc"), ("alpine@sha256:abc", None));
    }
}
