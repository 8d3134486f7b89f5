pub const PAGE: &str = include_str!("ui.html");
