//! Columns as Go's `tabwriter` lays them out for istioctl: each cell padded to its column's
//! widest cell plus `padding` spaces; the last cell of a line is not padded (an empty last cell
//! leaves the padding before it, as tabwriter does).

/// Renders `header` and `rows` as aligned columns.
pub fn render(header: &[&str], rows: &[Vec<String>], padding: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(cell.chars().count()),
                None => widths.push(cell.chars().count()),
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            text.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths[i] + padding - cell.chars().count();
                text.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(&text);
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_with_padding() {
        let t = render(
            &["NAME", "CDS"],
            &[
                vec!["productpage.default".into(), "SYNCED".into()],
                vec!["a".into(), "STALE".into()],
            ],
            5,
        );
        assert_eq!(
            t,
            "NAME                    CDS\nproductpage.default     SYNCED\na                       STALE\n"
        );
        // A row wider than the header is laid out too; an empty last cell keeps its padding.
        let t = render(&["A"], &[vec!["x".into(), "".into()]], 1);
        assert_eq!(t, "A\nx \n");
    }
}
