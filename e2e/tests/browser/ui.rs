//! What a user does on the web client, step by step, through the page's
//! own forms and buttons, each step waiting (bounded) for what the user
//! would see next.

use std::time::Duration;

use serde_json::{json, Value};
use testkit::WAIT;

use crate::driver::Page;

/// The texts of the open conversation's messages, in page order.
pub const MESSAGE_TEXTS: &str = "return [...document.querySelectorAll('#messages li.msg .text')]\
     .map(e => e.textContent)";

/// Registers `name` from the page's form; returns the id the page shows.
pub async fn register(page: &Page, url: &str, name: &str, password: &str) -> i64 {
    page.goto(url).await;
    page.wait_js(
        "the log-in view",
        "return !document.getElementById('auth-view').hidden",
        vec![],
    )
    .await;
    page.type_into("#register-name", name).await;
    page.type_into("#register-password", password).await;
    page.click("#register-form button[type=submit]").await;
    let shown = page
        .wait_js(
            "the new id",
            "return document.getElementById('register-result').textContent",
            vec![],
        )
        .await;
    let shown = shown.as_str().unwrap_or_default().to_owned();
    let id: i64 = shown
        .split("user id is ")
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no id in {shown:?}"));
    // The page fills the login form with the new id.
    let login_id = page
        .js("return document.getElementById('login-id').value", vec![])
        .await;
    assert_eq!(login_id, json!(id.to_string()));
    id
}

/// Logs in with the password (the id is already in the form, as after
/// [`register`]) and waits for the chat view, online.
pub async fn log_in(page: &Page, password: &str) {
    page.type_into("#login-password", password).await;
    page.press_enter("#login-password").await;
    wait_online(page).await;
}

pub async fn wait_online(page: &Page) {
    wait_online_within(page, WAIT).await;
}

/// [`wait_online`] for a page that may be in a reconnect backoff.
pub async fn wait_online_within(page: &Page, within: Duration) {
    page.wait_js_within(
        within,
        "the chat view, online",
        "return document.body.dataset.status === 'online' \
         && !document.getElementById('chat-view').hidden",
        vec![],
    )
    .await;
}

pub async fn register_and_log_in(page: &Page, url: &str, name: &str, password: &str) -> i64 {
    let id = register(page, url, name, password).await;
    log_in(page, password).await;
    id
}

/// The conversation button's key: `u:ID` or `g:ID`.
fn conv_button(key: &str) -> String {
    format!("button[data-conv=\"{key}\"]")
}

pub async fn wait_conv(page: &Page, key: &str) {
    page.wait_js(
        &format!("conversation {key} in the list"),
        "return !!document.querySelector(arguments[0])",
        vec![json!(conv_button(key))],
    )
    .await;
}

pub async fn add_friend(page: &Page, id: i64) {
    page.type_into("#friend-id", &id.to_string()).await;
    page.press_enter("#friend-id").await;
    wait_conv(page, &format!("u:{id}")).await;
}

/// Opens a conversation from the list (keyboard: focus, then Enter).
pub async fn open(page: &Page, key: &str) {
    wait_conv(page, key).await;
    page.js(
        "document.querySelector(arguments[0]).focus()",
        vec![json!(conv_button(key))],
    )
    .await;
    page.press_enter(&conv_button(key)).await;
    page.wait_js(
        &format!("conversation {key} open"),
        "return document.getElementById('messages').dataset.conv === arguments[0] \
         && document.activeElement.id === 'compose-text'",
        vec![json!(key)],
    )
    .await;
}

/// Types `text` in the open conversation and presses Enter; waits until
/// the server stored it.
pub async fn send(page: &Page, text: &str) {
    page.type_into("#compose-text", text).await;
    page.press_enter("#compose-text").await;
    wait_stored(page, text).await;
}

/// Puts `text` in the message box without typing it key by key (for texts
/// WebDriver cannot type: beyond the BMP, 60 KB) and presses Enter.
pub async fn send_pasted(page: &Page, text: &str) {
    page.js(
        "document.getElementById('compose-text').value = arguments[0]",
        vec![json!(text)],
    )
    .await;
    page.press_enter("#compose-text").await;
    wait_stored(page, text).await;
}

pub async fn wait_stored(page: &Page, text: &str) {
    page.wait_js(
        "my message stored",
        "return [...document.querySelectorAll('#messages li.msg.mine')]\
         .some(li => li.querySelector('.text').textContent === arguments[0] \
                     && li.dataset.state === 'stored')",
        vec![json!(text)],
    )
    .await;
}

/// Waits until the open conversation shows `text`.
pub async fn wait_message(page: &Page, text: &str) {
    page.wait_js(
        &format!("message {:?}", short(text)),
        "return [...document.querySelectorAll('#messages li.msg .text')]\
         .some(e => e.textContent === arguments[0])",
        vec![json!(text)],
    )
    .await;
}

/// The open conversation's message texts.
pub async fn texts(page: &Page) -> Vec<String> {
    match page.js(MESSAGE_TEXTS, vec![]).await {
        Value::Array(items) => items
            .into_iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect(),
        other => panic!("message texts: {other}"),
    }
}

/// Unread count shown on a conversation's button (0 when hidden).
pub async fn unread(page: &Page, key: &str) -> i64 {
    let value = page
        .js(
            "const b = document.querySelector(arguments[0]);\
             const u = b && b.querySelector('.unread');\
             return u && !u.hidden ? Number(u.textContent) : 0",
            vec![json!(conv_button(key))],
        )
        .await;
    value.as_i64().unwrap_or(0)
}

/// Whether the friend `id` shows as online.
pub async fn shows_online(page: &Page, id: i64) -> bool {
    page.js(
        "const b = document.querySelector(arguments[0]);\
         return !!(b && b.querySelector('.presence.online'))",
        vec![json!(conv_button(&format!("u:{id}")))],
    )
    .await
        == json!(true)
}

pub fn short(text: &str) -> String {
    text.chars().take(40).collect()
}

/// Waits until the error banner says `text`.
pub async fn wait_error(page: &Page, text: &str) {
    page.wait_js(
        &format!("the error {text:?}"),
        "return !document.getElementById('error').hidden \
         && document.getElementById('error-text').textContent === arguments[0]",
        vec![json!(text)],
    )
    .await;
}
