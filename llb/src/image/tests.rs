use serde_json::Value;

use super::*;

const FIXTURE: &str = include_str!("testdata/docker-config.json");

#[test]
fn docker_config_round_trips_with_unknown_fields_and_nulls() {
    let image = Image::from_json(FIXTURE.as_bytes()).unwrap();
    let original: Value = serde_json::from_str(FIXTURE).unwrap();
    let again: Value = serde_json::from_slice(&image.to_json()).unwrap();
    // serde_json's map equality ignores key order.
    assert_eq!(again, original);
    let twice = Image::from_json(&image.to_json()).unwrap();
    assert_eq!(twice, image);
}

#[test]
fn typed_fields_are_read() {
    let image = Image::from_json(FIXTURE.as_bytes()).unwrap();
    assert_eq!(image.platform().to_string(), "linux/arm64");
    let c = &image.config;
    assert_eq!(c.user.as_deref(), Some("app:app"));
    assert_eq!(c.exposed_ports.as_ref().unwrap().iter().collect::<Vec<_>>(), ["443/tcp", "80/tcp"]);
    assert_eq!(c.env_get("NGINX_VERSION"), Some("1.27.0"));
    assert_eq!(c.env_get("NGINX"), None);
    assert_eq!(c.volumes, None);
    assert_eq!(c.working_dir.as_deref(), Some(""));
    let hc = c.healthcheck.as_ref().unwrap();
    assert_eq!((hc.interval, hc.start_period, hc.retries), (Some(30_000_000_000), Some(0), Some(3)));
    assert_eq!(c.extra.get("Hostname"), Some(&Value::String(String::new())));
    assert_eq!(image.history.len(), 3);
    assert!(image.history[1].empty_layer);
    assert_eq!(image.rootfs.diff_ids[0], Digest::of(b""));
    assert!(image.extra.contains_key("container_config"));
}

#[test]
fn setting_a_null_field_replaces_the_null() {
    let mut image = Image::from_json(FIXTURE.as_bytes()).unwrap();
    image.config.volumes = Some(["/data".to_string()].into());
    let json: Value = serde_json::from_slice(&image.to_json()).unwrap();
    assert_eq!(json["config"]["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(json["config"]["OnBuild"], Value::Null);
}

#[test]
fn scratch_image_omits_empty_fields() {
    let mut image = Image::scratch(&"linux/arm/v7".parse().unwrap());
    image.config.set_env("PATH", "/bin");
    image.config.set_env("A", "1");
    image.push_history("ENV A=1", None, true);
    let json = String::from_utf8(image.to_json()).unwrap();
    assert_eq!(
        json,
        r#"{"architecture":"arm","variant":"v7","os":"linux","config":{"Env":["PATH=/bin","A=1"]},"rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"ENV A=1","comment":"buildkit.dockerfile.v0","empty_layer":true}]}"#
    );
}

#[test]
fn rejects_bad_json() {
    assert!(Image::from_json(b"{\"rootfs\": {\"type\": \"layers\", \"diff_ids\": [\"sha256:1\"]}}").is_err());
    assert!(Image::from_json(b"[]").is_err());
}
