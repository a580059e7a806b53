//! The administrators' HTML pages every service serves the same way (conflict-resolver's review
//! pages, sync-monitor's dashboard): one page frame, and the login that turns the admin token
//! into a session cookie ([`super::session`]).

use std::collections::BTreeMap;

use actix_web::{HttpRequest, HttpResponse, http::header, web};

use super::{ApiError, session};
use crate::notify::escape_html;

/// Where a service's pages live: `/review`, `/dashboard`.
#[derive(Clone, Copy, Debug)]
pub struct Site {
    /// The landing page, and the prefix of the login page (`<home>/login`).
    pub home: &'static str,
    /// The header's title.
    pub name: &'static str,
    /// The site's own CSS, after the common one.
    pub style: &'static str,
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#222}\
header{background:#24364b;padding:.6em 1em}header a{color:#fff;text-decoration:none;font-weight:600}\
main{padding:1em 1.5em;max-width:1200px}table{border-collapse:collapse;width:100%}\
th,td{border:1px solid #ccd;padding:.35em .5em;text-align:left;vertical-align:top}\
th{background:#eef1f5}form.inline{display:inline}button{padding:.35em .9em}\
.note{background:#eef6ee;padding:.5em}";

impl Site {
    /// A whole page: the frame, the site's header and `body` (HTML, already escaped).
    pub fn page(&self, title: &str, body: &str) -> HttpResponse {
        HttpResponse::Ok().content_type("text/html; charset=utf-8").body(format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title} · datasync</title><style>{STYLE}{style}</style></head>\
             <body><header><a href=\"{home}\">{name}</a></header><main>{body}</main></body></html>",
            title = escape_html(title),
            style = self.style,
            home = self.home,
            name = escape_html(self.name),
        ))
    }

    /// To the login page.
    pub fn login_redirect(&self) -> HttpResponse {
        see(&format!("{}/login", self.home))
    }

    /// The login form (the admin token).
    pub fn login_form(&self) -> HttpResponse {
        self.page(
            "Log in",
            &format!(
                "<h1>Log in</h1><form method=\"post\" action=\"{}/login\">\
                 <label>Admin token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\"></label> \
                 <button type=\"submit\" id=\"login\">Log in</button></form>",
                self.home
            ),
        )
    }

    /// Logs in with the admin token the form carries: a session cookie, then the landing page.
    pub fn login(
        &self,
        req: &HttpRequest,
        form: &web::Form<BTreeMap<String, String>>,
    ) -> Result<HttpResponse, ApiError> {
        let given = form.get("token").map(String::as_str).unwrap_or_default();
        if !session::is_admin_token(req, given)? {
            return Ok(HttpResponse::Unauthorized().content_type("text/html; charset=utf-8").body(
                format!(
                    "<!doctype html><p>Wrong token. <a href=\"{}/login\">Try again</a></p>",
                    self.home
                ),
            ));
        }
        let token = session::admin_token(req)?;
        let value = session::new_session(&token, chrono::Utc::now().timestamp());
        let secure = req.connection_info().scheme() == "https";
        Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, self.home))
            .insert_header((header::SET_COOKIE, session::cookie(&value, secure)))
            .finish())
    }
}

/// `303 See Other` to `location`.
pub fn see(location: &str) -> HttpResponse {
    HttpResponse::SeeOther().insert_header((header::LOCATION, location.to_owned())).finish()
}
