//! Graph API error envelopes as the sandbox answers them (reference section c).

use hyper::StatusCode;
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};

/// Title (the text after `(#CODE)` in `error.message`) and `error_data.details` for the codes
/// of the reference table. Unknown codes get a generic title so any code can be simulated.
pub(crate) fn describe(code: u32) -> (&'static str, &'static str) {
    match code {
        0 => ("AuthException", "We were unable to authenticate the app user."),
        1 => ("API Unknown", "Invalid request or possible server error."),
        2 => ("API Service", "Temporary due to downtime or due to being overloaded."),
        3 => ("API Method", "Capability or permissions issue."),
        4 => ("API Too Many Calls", "The app has reached its API call rate limit."),
        10 => ("Permission Denied", "Permission is either not granted or has been removed."),
        33 => ("Parameter value is not valid", "The business phone number has been deleted."),
        100 => ("Invalid parameter", "The request included one or more unsupported or misspelled parameters."),
        190 => ("Access token has expired", "Your access token has expired."),
        200..=299 => ("API Permission", "Permission is either not granted or has been removed."),
        368 => ("Temporarily blocked for policies violations", "The WhatsApp Business Account associated with the app has been restricted or disabled for violating a platform policy."),
        80007 => ("Rate limit issues", "The WhatsApp Business Account has reached its rate limit."),
        130403 => ("Recipient blocked by business", "The business has blocked this user."),
        130429 => ("Rate limit hit", "Cloud API message throughput has been reached."),
        130497 => ("Business account is restricted from messaging users in this country", "The WhatsApp Business Account is restricted from messaging users in certain countries."),
        131000 => ("Something went wrong", "Message failed to send due to an unknown error."),
        131005 => ("Access denied", "Permission is either not granted or has been removed."),
        131008 => ("Required parameter is missing", "The request is missing a required parameter."),
        131009 => ("Parameter value is not valid", "One or more parameter values are invalid."),
        131016 => ("Service unavailable", "A service is temporarily unavailable."),
        131021 => ("Recipient cannot be sender", "Sender and recipient phone number is the same."),
        131026 => ("Message undeliverable", "Message Undeliverable."),
        131030 => ("Recipient phone number not in allowed list", "Add recipient phone number to recipient list and try again."),
        131031 => ("Account has been locked", "The WhatsApp Business Account has been restricted or disabled for violating a platform policy."),
        131037 => ("WhatsApp provided number needs display name approval before message can be sent", "The business phone number's display name has not been approved."),
        131042 => ("Business eligibility payment issue", "There was an error related to your payment method."),
        131045 => ("Incorrect certificate", "Message failed to send due to a phone number registration error."),
        131047 => ("Re-engagement message", "Message failed to send because more than 24 hours have passed since the customer last replied to this number."),
        131048 => ("Spam rate limit hit", "Message failed to send because there are restrictions on how many messages can be sent from this phone number."),
        131049 => ("This message was not delivered to maintain healthy ecosystem engagement", "Meta chose not to deliver this marketing message."),
        131050 => ("Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business", "The user has stopped marketing messages from this business."),
        131051 => ("Unsupported message type", "Unsupported message type."),
        131052 => ("Media download error", "Unable to download the media sent by the user."),
        131053 => ("Media upload error", "Unable to upload the media used in the message."),
        131056 => ("(Business Account, Consumer Account) pair rate limit hit", "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."),
        131057 => ("Account in maintenance mode", "The business account is in maintenance mode."),
        131063 => ("Marketing templates disabled", "Marketing template messages are disabled for this business on Cloud API."),
        131064 => ("Messaging limit due to template classification violations", "Messaging is limited because of template classification violations."),
        132000 => ("Number of parameters does not match the expected number of params", "The number of variable parameter values does not match the number of variables in the template."),
        132001 => ("Template name does not exist in the translation", "The template does not exist in the specified language or has not been approved."),
        132005 => ("Translated text too long", "Translated text is too long."),
        132007 => ("Template Format Character Policy Violated", "Template content violates a WhatsApp policy."),
        132012 => ("Parameter format does not match format in the created template", "Variable parameter values are formatted incorrectly."),
        132015 => ("Template is Paused", "The template is paused due to low quality."),
        132016 => ("Template is Disabled", "The template has been paused too many times due to low quality and is now permanently disabled."),
        132068 => ("Flow is in blocked state", "The Flow is in BLOCKED state."),
        132069 => ("Flow is in throttled state and 10 messages using this flow were already sent in the last hour", "The Flow is in THROTTLED state."),
        133004 => ("Server Temporarily Unavailable", "The server is temporarily unavailable."),
        133010 => ("Phone number Not Registered", "The phone number is not registered on the WhatsApp Business Platform."),
        133016 => ("Account register deregister rate limit exceeded", "Registration or deregistration failed because there were too many attempts for this phone number."),
        135000 => ("Generic user error", "Message failed to send because of an unknown error with your request parameters."),
        _ => ("Unknown error", "The sandbox was told to fail this request with this code."),
    }
}

/// HTTP status the sandbox answers with for a Graph error code: 401 for the authentication
/// codes (0, 190), 400 for everything else, so clients have to branch on `error.code`.
pub(crate) fn status_for(code: u32) -> StatusCode {
    match code {
        0 | 190 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// A random `fbtrace_id` shaped like Meta's (23 alphanumerics).
fn fbtrace_id() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 23)
}

/// Envelope for a simulated failure with the code's standard title and details.
pub(crate) fn envelope(code: u32) -> Value {
    let (title, details) = describe(code);
    build(code, &format!("(#{code}) {title}"), details)
}

/// Envelope for a request the sandbox refused; `message` is already prefixed with `(#CODE)`.
pub(crate) fn envelope_with(code: u32, message: &str) -> Value {
    // The message names the offending field; details repeat it for clients that only log details.
    let details = message
        .split_once(") ")
        .map_or(message, |(_, rest)| rest)
        .to_owned();
    build(code, message, &details)
}

fn build(code: u32, message: &str, details: &str) -> Value {
    json!({
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "error_data": { "messaging_product": "whatsapp", "details": details },
            "fbtrace_id": fbtrace_id(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_title_and_code() {
        let v = envelope(131026);
        assert_eq!(v["error"]["message"], "(#131026) Message undeliverable");
        assert_eq!(v["error"]["code"], 131026);
        assert_eq!(v["error"]["type"], "OAuthException");
        assert_eq!(v["error"]["error_data"]["messaging_product"], "whatsapp");
        assert_eq!(v["error"]["fbtrace_id"].as_str().map(str::len), Some(23));
    }

    #[test]
    fn only_auth_codes_are_401() {
        assert_eq!(status_for(190), StatusCode::UNAUTHORIZED);
        assert_eq!(status_for(0), StatusCode::UNAUTHORIZED);
        assert_eq!(status_for(130429), StatusCode::BAD_REQUEST);
        assert_eq!(status_for(4), StatusCode::BAD_REQUEST);
    }
}
