//! A self-contained HTML page: inline CSS, inline SVG, images as `data:` URIs; no script, no
//! link to anything outside the file.

/// The page's style sheet (inline: the file must stand alone).
const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1400px}\
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #ccc;padding-bottom:4px}\
h3{font-size:15px;margin-top:18px}\
table{border-collapse:collapse;font-size:12px;margin:8px 0}\
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}\
th{background:#f2f2f2}tr:nth-child(even) td{background:#fafafa}\
.figs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}\
figcaption{font-size:12px;color:#555;max-width:440px}\
.note{color:#555;font-size:13px}.gallery img{border:1px solid #ccc}\
.placeholder{width:440px;height:400px;border:1px dashed #bbb;display:flex;align-items:center;justify-content:center;text-align:center;color:#777;font-size:13px;padding:0 24px;box-sizing:border-box}";

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The page being written, and how many plots it holds.
#[derive(Debug, Default)]
pub struct Page {
    body: String,
    plots: usize,
    figures_open: bool,
}

impl Page {
    pub fn h1(&mut self, text: &str) {
        self.close_figures();
        self.body.push_str(&format!("<h1>{}</h1>\n", esc(text)));
    }

    pub fn h2(&mut self, text: &str) {
        self.close_figures();
        self.body.push_str(&format!("<h2>{}</h2>\n", esc(text)));
    }

    pub fn h3(&mut self, text: &str) {
        self.close_figures();
        self.body.push_str(&format!("<h3>{}</h3>\n", esc(text)));
    }

    /// A paragraph of plain text.
    pub fn p(&mut self, text: &str) {
        self.close_figures();
        self.body.push_str(&format!("<p>{}</p>\n", esc(text)));
    }

    /// A paragraph in the note style.
    pub fn note(&mut self, text: &str) {
        self.close_figures();
        self.body.push_str(&format!("<p class=\"note\">{}</p>\n", esc(text)));
    }

    /// A table of plain-text cells.
    pub fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        self.close_figures();
        self.body.push_str("<table><thead><tr>");
        for h in headers {
            self.body.push_str(&format!("<th>{}</th>", esc(h)));
        }
        self.body.push_str("</tr></thead><tbody>\n");
        for r in rows {
            self.body.push_str("<tr>");
            for c in r {
                self.body.push_str(&format!("<td>{}</td>", esc(c)));
            }
            self.body.push_str("</tr>\n");
        }
        self.body.push_str("</tbody></table>\n");
    }

    /// An inline SVG plot with its caption; consecutive figures flow side by side.
    pub fn svg(&mut self, svg: &str, caption: &str) {
        self.open_figures();
        // The XML declaration plotters may write is not allowed inside HTML.
        let svg = match svg.find("<svg") {
            Some(i) => &svg[i..],
            None => svg,
        };
        self.body.push_str(&format!(
            "<figure>{svg}<figcaption>{}</figcaption></figure>\n",
            esc(caption)
        ));
        self.plots += 1;
    }

    /// A plot's place holding a text instead (a panel that cannot be drawn, and why); not
    /// counted as a plot.
    pub fn placeholder(&mut self, text: &str, caption: &str) {
        self.open_figures();
        self.body.push_str(&format!(
            "<figure><div class=\"placeholder\">{}</div><figcaption>{}</figcaption></figure>\n",
            esc(text),
            esc(caption)
        ));
    }

    /// A PNG as a `data:` URI with its caption.
    pub fn png(&mut self, png: &[u8], caption: &str) {
        use base64::Engine;
        self.open_figures();
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        self.body.push_str(&format!(
            "<figure class=\"gallery\"><img alt=\"{0}\" src=\"data:image/png;base64,{b64}\"><figcaption>{0}</figcaption></figure>\n",
            esc(caption)
        ));
    }

    fn open_figures(&mut self) {
        if !self.figures_open {
            self.body.push_str("<div class=\"figs\">\n");
            self.figures_open = true;
        }
    }

    fn close_figures(&mut self) {
        if self.figures_open {
            self.body.push_str("</div>\n");
            self.figures_open = false;
        }
    }

    /// Plots added so far.
    pub fn plots(&self) -> usize {
        self.plots
    }

    /// The whole document.
    pub fn finish(mut self, title: &str) -> String {
        self.close_figures();
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\n<body>\n{}</body></html>\n",
            esc(title),
            self.body
        )
    }
}
