//! `osprey-coordinator rotate-secrets-key`: a new current key at the top of
//! the key file (the old ones stay, for reading), then every stored
//! variable and webhook secret re-encrypted with it. Interrupted, it can be
//! run again: rows still under an old key are read with it.

use crate::config::RotateKeyArgs;
use crate::secrets::{variable_aad, webhook_aad, Keyring};
use crate::storage::prelude::*;
use crate::storage::SqlStore;
use anyhow::Context;

pub async fn rotate(args: RotateKeyArgs) -> anyhow::Result<String> {
    let key_file = args
        .secrets_key_file
        .unwrap_or_else(|| args.data_dir.join("secrets.key"));
    let url = args
        .database_url
        .unwrap_or_else(|| crate::storage::sqlite_url(&args.data_dir));
    let store = SqlStore::open(&url).await.context("opening the store")?;
    // Refuse early if the current file cannot be read.
    Keyring::load_or_create(&key_file).context("reading the secrets key file")?;
    Keyring::rotate_file(&key_file).context("adding a new key")?;
    let keyring = Keyring::load_or_create(&key_file).context("reading the new key file")?;
    let mut variables = 0;
    for row in store.all_variables().await? {
        let aad = variable_aad(row.project_id, &row.key, &row.env_scope);
        if keyring.is_current(&row.value) {
            continue;
        }
        let plain = keyring.decrypt(&row.value, &aad).with_context(|| {
            format!(
                "decrypting variable {} of project {}",
                row.key, row.project_id
            )
        })?;
        store
            .set_variable_value(row.id, &keyring.encrypt(&plain, &aad))
            .await?;
        variables += 1;
    }
    let mut projects = 0;
    for mut project in store.projects().await? {
        if keyring.is_current(&project.webhook_secret) {
            continue;
        }
        let aad = webhook_aad(project.id);
        let plain = keyring
            .decrypt(&project.webhook_secret, &aad)
            .with_context(|| format!("decrypting the webhook secret of {}", project.name))?;
        project.webhook_secret = keyring.encrypt(&plain, &aad);
        store.update_project(&project).await?;
        projects += 1;
    }
    Ok(format!(
        "new key in {}; re-encrypted {variables} variable(s) and {projects} webhook secret(s)\n",
        key_file.display()
    ))
}
