//! productpage's HTML: the index page and the product page, with the markup of bookinfo's
//! templates (index.html, productpage.html) so what people grep for is there: the
//! `glyphicon-star` spans inside `<font color="black">` (reviews v2) or `<font color="red">`
//! (v3), "Book Details", "Book Reviews", and the error headings and messages.

use serde_json::Value;

/// One call's outcome as the page shows it: the status and the JSON (the app's answer on a
/// 200, else `{"error": "<bookinfo's message>"}`).
pub(super) struct Outcome {
    pub(super) status: u16,
    pub(super) body: Value,
}

/// The attributes productpage gives its tables.
const TABLE: &str = r#"class="table table-condensed table-bordered table-hover""#;

/// bootstrap is not served: a few rules so that the page reads in a browser, the stars
/// included (the spans stay empty, as in bookinfo's page, and the rules do not spell the
/// class names, so counting `glyphicon-star` in the page counts stars).
const STYLE: &str = r#"<style>
body { font-family: sans-serif; margin: 0; }
.navbar { background: #222; color: #ddd; padding: 8px 16px; overflow: hidden; }
.navbar a { color: #ddd; }
.navbar-brand { font-size: 18px; text-decoration: none; }
.navbar-right { float: right; margin: 0; }
.container-fluid { padding: 0 16px; }
.col-md-6 { float: left; width: 48%; padding: 0 1%; }
.text-center { text-align: center; }
.text-primary { color: #337ab7; }
table, th, td { border: 1px solid #ddd; border-collapse: collapse; padding: 4px; }
span[class$="-star"]:before { content: "\2605"; }
span[class$="-empty"]:before { content: "\2606"; }
i[class$="-user"]:before { content: "\263A"; }
</style>"#;

/// HTML-escapes text (as Jinja's autoescape).
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A JSON value as Jinja prints it: strings escaped, numbers as they are, a missing field
/// as nothing.
fn show(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => escape(s),
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        other => escape(&other.to_string()),
    }
}

fn head(out: &mut String) {
    out.push_str(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"X-UA-Compatible\" content=\"IE=edge\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\">\n\
         <title>Simple Bookstore App</title>\n",
    );
    out.push_str(STYLE);
    out.push_str("\n</head>\n<body>\n");
}

/// JSON as nested HTML tables (like the json2html productpage uses for its index page).
pub(super) fn json_table(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut out = format!("<table {TABLE}>");
            for (k, v) in map {
                out.push_str(&format!(
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(k),
                    json_table(v)
                ));
            }
            out.push_str("</table>");
            out
        }
        Value::Array(items) if items.is_empty() => String::new(),
        Value::Array(items) if items.iter().all(Value::is_object) => {
            let mut keys: Vec<&String> = Vec::new();
            for item in items.iter().filter_map(Value::as_object) {
                for k in item.keys() {
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            let mut out = format!("<table {TABLE}><thead><tr>");
            for k in &keys {
                out.push_str(&format!("<th>{}</th>", escape(k)));
            }
            out.push_str("</tr></thead><tbody>");
            for item in items {
                out.push_str("<tr>");
                for k in &keys {
                    out.push_str(&format!("<td>{}</td>", json_table(&item[k.as_str()])));
                }
                out.push_str("</tr>");
            }
            out.push_str("</tbody></table>");
            out
        }
        Value::Array(items) => {
            let mut out = "<ul>".to_string();
            for item in items {
                out.push_str(&format!("<li>{}</li>", json_table(item)));
            }
            out.push_str("</ul>");
            out
        }
        other => show(other),
    }
}

/// The index page: the service graph and links to the product page.
pub(super) fn index(graph: &Value) -> String {
    let mut out = String::new();
    head(&mut out);
    out.push_str(
        "<p>\n    <h3>Hello! This is a simple bookstore application consisting of three services as shown below</h3>\n</p>\n",
    );
    out.push_str(&json_table(graph));
    out.push_str(
        "\n<p>\n    <h4>Click on one of the links below to auto generate a request to the backend as a real user or a tester\n    </h4>\n</p>\n\
         <p><a href=\"/productpage?u=normal\">Normal user</a></p>\n\
         <p><a href=\"/productpage?u=test\">Test user</a></p>\n</body>\n</html>\n",
    );
    out
}

/// The product page: the book, its details and its reviews, and who is signed in.
pub(super) fn product(
    product: &Value,
    details: &Outcome,
    reviews: &Outcome,
    user: Option<&str>,
) -> String {
    let mut out = String::new();
    head(&mut out);
    out.push_str(
        "<nav class=\"navbar navbar-inverse navbar-static-top\">\n  <div class=\"container\">\n    \
         <div class=\"navbar-header\">\n      <a class=\"navbar-brand\" href=\"#\">BookInfo Sample</a>\n    </div>\n",
    );
    match user {
        Some(user) => out.push_str(&format!(
            "    <p class=\"navbar-text navbar-right\">\n      \
             <i class=\"glyphicon glyphicon-user\" aria-hidden=\"true\"></i>\n      \
             <span style=\"padding-left: 5px;\">{} ( <a href=\"logout\">sign out</a> )</span>\n    </p>\n",
            escape(user)
        )),
        None => out.push_str(
            "    <form class=\"navbar-form navbar-right\" method=\"post\" action=\"login\" name=\"login_form\">\n      \
             <input type=\"text\" class=\"form-control\" name=\"username\" id=\"username\" placeholder=\"User Name\">\n      \
             <input type=\"password\" class=\"form-control\" name=\"passwd\" placeholder=\"Password\">\n      \
             <button type=\"submit\" class=\"btn btn-default\">Sign in</button>\n    </form>\n",
        ),
    }
    out.push_str("  </div>\n</nav>\n\n<div class=\"container-fluid\">\n  <div class=\"row\">\n    <div class=\"col-md-12\">\n");
    out.push_str(&format!(
        "      <h3 class=\"text-center text-primary\">{}</h3>\n",
        show(&product["title"])
    ));
    // The description is HTML (autoescape off in bookinfo's template).
    out.push_str(&format!(
        "      <p>Summary: {}</p>\n    </div>\n  </div>\n\n  <div class=\"row\">\n    <div class=\"col-md-6\">\n",
        product["descriptionHtml"].as_str().unwrap_or_default()
    ));
    details_html(&mut out, details);
    out.push_str("    </div>\n\n    <div class=\"col-md-6\">\n");
    reviews_html(&mut out, reviews);
    out.push_str("    </div>\n  </div>\n</div>\n</body>\n</html>\n");
    out
}

fn details_html(out: &mut String, details: &Outcome) {
    if details.status == 200 {
        out.push_str(
            "      <h4 class=\"text-center text-primary\">Book Details</h4>\n      <dl>\n",
        );
        for (label, key) in [
            ("Type", "type"),
            ("Pages", "pages"),
            ("Publisher", "publisher"),
            ("Language", "language"),
            ("ISBN-10", "ISBN-10"),
            ("ISBN-13", "ISBN-13"),
        ] {
            out.push_str(&format!(
                "        <dt>{label}:</dt>{}\n",
                show(&details.body[key])
            ));
        }
        out.push_str("      </dl>\n");
    } else {
        out.push_str(
            "      <h4 class=\"text-center text-primary\">Error fetching product details!</h4>\n",
        );
        error_paragraph(out, &details.body);
    }
}

fn reviews_html(out: &mut String, reviews: &Outcome) {
    if reviews.status != 200 {
        out.push_str(
            "      <h4 class=\"text-center text-primary\">Error fetching product reviews!</h4>\n",
        );
        error_paragraph(out, &reviews.body);
        return;
    }
    out.push_str("      <h4 class=\"text-center text-primary\">Book Reviews</h4>\n");
    let list = reviews.body["reviews"].as_array().map_or(&[][..], |v| v);
    for review in list {
        out.push_str(&format!(
            "      <blockquote>\n        <p>{}</p>\n        <small>{}</small>\n",
            show(&review["text"]),
            show(&review["reviewer"])
        ));
        let rating = &review["rating"];
        let stars = rating["stars"].as_i64().unwrap_or(0);
        if stars != 0 {
            out.push_str(&format!(
                "        <font color=\"{}\">\n          <!-- full stars: -->\n",
                show(&rating["color"])
            ));
            for _ in 0..stars.clamp(0, 5) {
                out.push_str("          <span class=\"glyphicon glyphicon-star\"></span>\n");
            }
            out.push_str("          <!-- empty stars: -->\n");
            for _ in 0..(5 - stars).clamp(0, 5) {
                out.push_str("          <span class=\"glyphicon glyphicon-star-empty\"></span>\n");
            }
            out.push_str("        </font>\n");
        } else if let Some(e) = rating.get("error").filter(|e| !e.is_null()) {
            out.push_str(&format!("        <p><i>{}</i></p>\n", show(e)));
        }
        out.push_str("      </blockquote>\n");
    }
}

fn error_paragraph(out: &mut String, body: &Value) {
    if let Some(e) = body.get("error") {
        out.push_str(&format!("      <p>{}</p>\n", show(e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(body: Value) -> Outcome {
        Outcome { status: 200, body }
    }

    #[test]
    fn escaping_and_values() {
        assert_eq!(
            escape(r#"<a href="x">&'"#),
            "&lt;a href=&#34;x&#34;&gt;&amp;&#39;"
        );
        assert_eq!(show(&json!(200)), "200");
        assert_eq!(show(&json!(null)), "");
        assert_eq!(show(&json!("<b>")), "&lt;b&gt;");
    }

    #[test]
    fn stars_follow_the_rating() {
        let product = json!({"title": "T", "descriptionHtml": "<b>d</b>"});
        let reviews = ok(json!({"reviews": [
            {"reviewer": "Reviewer1", "text": "a", "rating": {"stars": 4, "color": "red"}},
            {"reviewer": "Reviewer2", "text": "b", "rating": {"error": "Ratings service is currently unavailable"}},
            {"reviewer": "Reviewer3", "text": "c"},
        ]}));
        let details = Outcome {
            status: 503,
            body: json!({"error": "Sorry, product details are currently unavailable for this book."}),
        };
        let page = super::product(&product, &details, &reviews, Some("<jason>"));
        assert_eq!(page.matches("<font color=\"red\">").count(), 1, "{page}");
        assert_eq!(
            page.matches("glyphicon glyphicon-star\"").count(),
            4,
            "{page}"
        );
        assert_eq!(page.matches("glyphicon-star-empty").count(), 1, "{page}");
        assert!(page.contains("<p><i>Ratings service is currently unavailable</i></p>"));
        assert!(page.contains("Error fetching product details!"));
        assert!(
            page.contains("<p>Sorry, product details are currently unavailable for this book.</p>")
        );
        assert!(page.contains("<p>Summary: <b>d</b></p>"));
        assert!(page.contains("&lt;jason&gt; ( <a href=\"logout\">sign out</a> )"));
        assert!(!page.contains("name=\"login_form\""));
    }

    #[test]
    fn details_and_sign_in_form() {
        let product = json!({"title": "The Comedy of Errors", "descriptionHtml": ""});
        let details = ok(json!({"type": "paperback", "pages": 200, "ISBN-10": "1234567890"}));
        let reviews = Outcome {
            status: 500,
            body: json!({"error": "Sorry, product reviews are currently unavailable for this book."}),
        };
        let page = super::product(&product, &details, &reviews, None);
        assert!(page.contains("<h3 class=\"text-center text-primary\">The Comedy of Errors</h3>"));
        assert!(page.contains("<h4 class=\"text-center text-primary\">Book Details</h4>"));
        assert!(page.contains("<dt>Type:</dt>paperback"));
        assert!(page.contains("<dt>Pages:</dt>200"));
        assert!(page.contains("<dt>ISBN-10:</dt>1234567890"));
        assert!(page.contains("<dt>Publisher:</dt>\n"));
        assert!(page.contains("Error fetching product reviews!"));
        assert!(page.contains("Sorry, product reviews are currently unavailable for this book."));
        assert!(page.contains("name=\"login_form\""));
        assert!(!page.contains("glyphicon-star"));
    }

    #[test]
    fn json_tables() {
        let t = json_table(&json!({"name": "http://details:9080", "children": [
            {"name": "a", "endpoint": "details", "children": []},
        ]}));
        assert!(t.starts_with(&format!("<table {TABLE}>")), "{t}");
        assert!(
            t.contains("<tr><th>name</th><td>http://details:9080</td></tr>"),
            "{t}"
        );
        // serde_json keeps object keys sorted.
        assert!(
            t.contains("<thead><tr><th>children</th><th>endpoint</th><th>name</th></tr></thead>"),
            "{t}"
        );
        assert!(
            t.contains("<tr><td></td><td>details</td><td>a</td></tr>"),
            "{t}"
        );
        assert_eq!(
            json_table(&json!(["x", 1])),
            "<ul><li>x</li><li>1</li></ul>"
        );
    }
}
