package io.github.txstream.kstreams;

import java.nio.ByteBuffer;
import java.nio.CharBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.LocalDate;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The CSV format of a transaction record, after txstream's txcsv package: one
 * line per record value, columns from the txstream-columns header or the
 * default order (transaction_id,account_id,amount,timestamp), the same
 * validation rules and dead-letter reasons.
 */
final class Csv {
    static final String HEADER_COLUMNS = "txstream-columns";
    static final String COL_TRANSACTION_ID = "transaction_id";
    static final String COL_ACCOUNT_ID = "account_id";
    static final String COL_AMOUNT = "amount";
    static final String COL_TIMESTAMP = "timestamp";
    static final String[] DEFAULT_COLUMNS = {COL_TRANSACTION_ID, COL_ACCOUNT_ID, COL_AMOUNT, COL_TIMESTAMP};
    static final int DEFAULT_MAX_LINE_BYTES = 64 << 10;
    static final int MAX_AMOUNT_DIGITS = 38;

    // Reasons (txcsv.Reason*).
    static final String EMPTY_TRANSACTION_ID = "empty_transaction_id";
    static final String MISSING_AMOUNT = "missing_amount";
    static final String INVALID_AMOUNT = "invalid_amount";
    static final String INVALID_TIMESTAMP = "invalid_timestamp";
    static final String FIELD_COUNT = "field_count";
    static final String INVALID_UTF8 = "invalid_utf8";
    static final String LINE_TOO_LONG = "line_too_long";
    static final String CSV_SYNTAX = "csv_syntax";
    static final String BAD_HEADER = "bad_columns_header";
    static final String CONFLICTING_DUPLICATE = "conflicting_duplicate";

    private Csv() {}

    /** A rejected row: a stable reason and a detail. No stack trace (it is a value, not a bug). */
    static final class RowException extends Exception {
        final String reason;

        RowException(String reason, String detail) {
            super(detail, null, false, false);
            this.reason = reason;
        }
    }

    /** A validated column list (txcsv.Schema). */
    static final class Schema {
        final String[] cols;
        final String joined;
        final int txId, account, amount, timestamp;
        /** Column positions in name order without transaction_id, for the content hash. */
        final int[] hashOrder;
        final byte[][] colBytes;

        Schema(String[] in) {
            if (in.length == 0) {
                throw new IllegalArgumentException("no columns");
            }
            cols = new String[in.length];
            Set<String> seen = new HashSet<>();
            int tx = -1, acc = -1, amt = -1, ts = -1;
            for (int i = 0; i < in.length; i++) {
                String c = goTrimSpace(in[i]);
                cols[i] = c;
                if (c.isEmpty()) {
                    throw new IllegalArgumentException("column " + (i + 1) + " has an empty name");
                }
                if (!seen.add(c)) {
                    throw new IllegalArgumentException("column \"" + c + "\" appears twice");
                }
                switch (c) {
                    case COL_TRANSACTION_ID -> tx = i;
                    case COL_ACCOUNT_ID -> acc = i;
                    case COL_AMOUNT -> amt = i;
                    case COL_TIMESTAMP -> ts = i;
                    default -> { }
                }
            }
            joined = String.join(",", cols);
            if (tx < 0) {
                throw new IllegalArgumentException("required column \"transaction_id\" is missing (columns: " + joined + ")");
            }
            if (amt < 0) {
                throw new IllegalArgumentException("required column \"amount\" is missing (columns: " + joined + ")");
            }
            txId = tx;
            account = acc;
            amount = amt;
            timestamp = ts;
            Integer[] order = new Integer[cols.length - 1];
            for (int i = 0, j = 0; i < cols.length; i++) {
                if (i != tx) {
                    order[j++] = i;
                }
            }
            Arrays.sort(order, (x, y) -> compareUtf8(cols[x], cols[y]));
            hashOrder = Arrays.stream(order).mapToInt(Integer::intValue).toArray();
            colBytes = new byte[cols.length][];
            for (int i = 0; i < cols.length; i++) {
                colBytes[i] = cols[i].getBytes(StandardCharsets.UTF_8);
            }
        }

        static Schema parseColumns(String list) {
            return new Schema(list.split(",", -1));
        }
    }

    /** Byte order of the UTF-8 encodings (Go's strings.Compare). */
    static int compareUtf8(String a, String b) {
        return Arrays.compareUnsigned(a.getBytes(StandardCharsets.UTF_8), b.getBytes(StandardCharsets.UTF_8));
    }

    /** One validated transaction (txcsv.Row). */
    static final class Row {
        String[] fields;
        String transactionId;
        String accountId = "";
        String amount;
        String timestamp = "";
        long timeNanos;
        boolean hasTime;

        String key() {
            return accountId.isEmpty() ? transactionId : accountId;
        }
    }

    /** A parser; not safe for concurrent use (it keeps a UTF-8 decoder). */
    static final class Parser {
        private final CharsetDecoder utf8 = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT);
        private final List<String> fields = new ArrayList<>(8);

        /** txcsv.Schema.ParseLine. */
        Row parseLine(Schema s, byte[] line, int maxLen) throws RowException {
            if (maxLen <= 0) {
                maxLen = DEFAULT_MAX_LINE_BYTES;
            }
            if (line.length > maxLen) {
                throw new RowException(LINE_TOO_LONG, line.length + " bytes, limit " + maxLen);
            }
            String str = decode(line);
            return validate(s, split(str));
        }

        private String decode(byte[] line) throws RowException {
            boolean ascii = true;
            for (byte b : line) {
                if (b < 0) {
                    ascii = false;
                    break;
                }
            }
            if (ascii) {
                return new String(line, StandardCharsets.ISO_8859_1);
            }
            try {
                utf8.reset();
                CharBuffer cb = utf8.decode(ByteBuffer.wrap(line));
                return cb.toString();
            } catch (CharacterCodingException e) {
                throw new RowException(INVALID_UTF8, "line is not valid UTF-8");
            }
        }

        /** txcsv.SplitLine: a fast path without quotes, RFC 4180 (as Go's encoding/csv) with them. */
        String[] split(String line) throws RowException {
            if (line.endsWith("\r")) {
                line = line.substring(0, line.length() - 1);
            }
            if (line.indexOf('"') < 0) {
                if (line.indexOf('\n') >= 0) {
                    throw new RowException(CSV_SYNTAX, "more than one line in a record");
                }
                fields.clear();
                int start = 0;
                for (;;) {
                    int i = line.indexOf(',', start);
                    if (i < 0) {
                        fields.add(line.substring(start));
                        return fields.toArray(new String[0]);
                    }
                    fields.add(line.substring(start, i));
                    start = i + 1;
                }
            }
            return splitQuoted(line.replace("\r\n", "\n"));
        }

        private String[] splitQuoted(String s) throws RowException {
            // Empty lines before the record are skipped, as encoding/csv does.
            int i = 0;
            int n = s.length();
            while (i < n && s.charAt(i) == '\n') {
                i++;
            }
            fields.clear();
            StringBuilder f = new StringBuilder();
            for (;;) {
                f.setLength(0);
                if (i < n && s.charAt(i) == '"') {
                    i++;
                    for (;;) {
                        if (i >= n) {
                            throw new RowException(CSV_SYNTAX, "extraneous or missing \" in quoted-field");
                        }
                        char c = s.charAt(i++);
                        if (c != '"') {
                            f.append(c);
                            continue;
                        }
                        if (i < n && s.charAt(i) == '"') {
                            f.append('"');
                            i++;
                            continue;
                        }
                        break; // closing quote
                    }
                    fields.add(f.toString());
                    if (i >= n || s.charAt(i) == '\n') {
                        break;
                    }
                    if (s.charAt(i) != ',') {
                        throw new RowException(CSV_SYNTAX, "extraneous or missing \" in quoted-field");
                    }
                    i++;
                } else {
                    int end = i;
                    while (end < n && s.charAt(end) != ',' && s.charAt(end) != '\n') {
                        end++;
                    }
                    String field = s.substring(i, end);
                    if (field.indexOf('"') >= 0) {
                        throw new RowException(CSV_SYNTAX, "bare \" in non-quoted-field");
                    }
                    fields.add(field);
                    i = end;
                    if (i >= n || s.charAt(i) == '\n') {
                        break;
                    }
                    i++; // the comma
                }
            }
            // Only line ends (empty lines) may follow the record.
            for (; i < n; i++) {
                if (s.charAt(i) != '\n') {
                    throw new RowException(CSV_SYNTAX, "more than one line in a record");
                }
            }
            return fields.toArray(new String[0]);
        }
    }

    /** txcsv.Schema.Validate. */
    static Row validate(Schema s, String[] fields) throws RowException {
        if (fields.length != s.cols.length) {
            throw new RowException(FIELD_COUNT, fields.length + " fields, expected " + s.cols.length + " (" + s.joined + ")");
        }
        Row r = new Row();
        r.fields = fields;
        r.transactionId = goTrimSpace(fields[s.txId]);
        if (r.transactionId.isEmpty()) {
            throw new RowException(EMPTY_TRANSACTION_ID, "");
        }
        if (s.account >= 0) {
            r.accountId = goTrimSpace(fields[s.account]);
        }
        r.amount = goTrimSpace(fields[s.amount]);
        if (r.amount.isEmpty()) {
            throw new RowException(MISSING_AMOUNT, "");
        }
        checkAmount(r.amount);
        if (s.timestamp >= 0) {
            r.timestamp = goTrimSpace(fields[s.timestamp]);
            if (!r.timestamp.isEmpty()) {
                r.timeNanos = parseTimestamp(r.timestamp);
                r.hasTime = true;
            }
        }
        return r;
    }

    /** txcsv.CheckAmount: optional sign, digits, an optional fraction; at most 38 digits. */
    static void checkAmount(String s) throws RowException {
        int i = 0;
        if (i < s.length() && (s.charAt(i) == '+' || s.charAt(i) == '-')) {
            i++;
        }
        int digits = 0, dots = 0, fracDigits = 0;
        for (; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c >= '0' && c <= '9') {
                digits++;
                if (dots > 0) {
                    fracDigits++;
                }
            } else if (c == '.') {
                dots++;
                if (dots > 1) {
                    throw new RowException(INVALID_AMOUNT, "\"" + clip(s) + "\" has more than one decimal point");
                }
            } else {
                throw new RowException(INVALID_AMOUNT, "\"" + clip(s) + "\" is not a decimal number");
            }
        }
        if (digits == 0) {
            throw new RowException(INVALID_AMOUNT, "\"" + clip(s) + "\" has no digits");
        }
        if (dots == 1 && fracDigits == 0 && s.charAt(s.length() - 1) == '.') {
            throw new RowException(INVALID_AMOUNT, "\"" + clip(s) + "\" ends with a decimal point");
        }
        if (digits > MAX_AMOUNT_DIGITS) {
            throw new RowException(INVALID_AMOUNT, digits + " digits, limit " + MAX_AMOUNT_DIGITS);
        }
    }

    /**
     * txcsv.ParseTimestamp, as Unix nanoseconds saturated at the long range:
     * RFC 3339 (T or space, fraction optional), naive date-times (UTC), a bare
     * date, Unix seconds or (more than 11 digits) milliseconds.
     */
    static long parseTimestamp(String s) throws RowException {
        if (!s.isEmpty() && s.charAt(0) >= '0' && s.charAt(0) <= '9' && noneOf(s, "-:T ")) {
            try {
                long n = Long.parseLong(s);
                return s.length() > 11 ? mulSat(n, 1_000_000L) : mulSat(n, 1_000_000_000L);
            } catch (NumberFormatException e) {
                // fall through to the layouts, which reject it
            }
        }
        long t = parseLayouts(s);
        if (t == NO_TIME) {
            throw new RowException(INVALID_TIMESTAMP, "\"" + clip(s)
                    + "\" is not RFC 3339, \"YYYY-MM-DD hh:mm:ss\", a date or Unix seconds/milliseconds");
        }
        return t;
    }

    private static final long NO_TIME = Long.MIN_VALUE + 1; // never a saturated result of a valid layout below

    private static long parseLayouts(String s) {
        int n = s.length();
        if (n < 10 || s.charAt(4) != '-' || s.charAt(7) != '-') {
            return NO_TIME;
        }
        int year = digits(s, 0, 4), month = digits(s, 5, 2), day = digits(s, 8, 2);
        if (year < 0 || month < 1 || month > 12 || day < 1) {
            return NO_TIME;
        }
        if (day > LocalDate.of(year, month, 1).lengthOfMonth()) {
            return NO_TIME;
        }
        long epochDay = LocalDate.of(year, month, day).toEpochDay();
        if (n == 10) {
            return toNanos(epochDay, 0, 0);
        }
        char sep = s.charAt(10);
        if (sep != 'T' && sep != ' ') {
            return NO_TIME;
        }
        int i = 11;
        // Hour: one or two digits (Go's "15").
        int hour;
        if (i + 2 <= n && digits(s, i, 2) >= 0) {
            hour = digits(s, i, 2);
            i += 2;
        } else if (i + 1 <= n && digits(s, i, 1) >= 0) {
            hour = digits(s, i, 1);
            i += 1;
        } else {
            return NO_TIME;
        }
        if (hour > 23 || i + 6 > n || s.charAt(i) != ':' || s.charAt(i + 3) != ':') {
            return NO_TIME;
        }
        int min = digits(s, i + 1, 2), sec = digits(s, i + 4, 2);
        if (min < 0 || min > 59 || sec < 0 || sec > 59) {
            return NO_TIME;
        }
        i += 6;
        long nanos = 0;
        if (i + 1 < n && (s.charAt(i) == '.' || s.charAt(i) == ',') && isDigit(s.charAt(i + 1))) {
            i++;
            int start = i;
            while (i < n && isDigit(s.charAt(i))) {
                i++;
            }
            for (int k = 0; k < 9; k++) {
                nanos = nanos * 10 + (start + k < i ? s.charAt(start + k) - '0' : 0);
            }
        }
        long offsetSeconds = 0;
        if (i < n) {
            // Z07:00
            if (s.charAt(i) == 'Z' && i + 1 == n) {
                offsetSeconds = 0;
            } else if (i + 6 == n && (s.charAt(i) == '+' || s.charAt(i) == '-') && s.charAt(i + 3) == ':') {
                int oh = digits(s, i + 1, 2), om = digits(s, i + 4, 2);
                if (oh < 0 || om < 0 || oh > 24 || om > 60) {
                    return NO_TIME;
                }
                offsetSeconds = (oh * 3600L + om * 60L) * (s.charAt(i) == '-' ? -1 : 1);
            } else {
                return NO_TIME;
            }
        }
        long secs = hour * 3600L + min * 60L + sec - offsetSeconds;
        return addSat(toNanos(epochDay, secs, 0), nanos);
    }

    private static long toNanos(long epochDay, long secs, long nanos) {
        return addSat(mulSat(addSat(mulSat(epochDay, 86400L), secs), 1_000_000_000L), nanos);
    }

    private static boolean isDigit(char c) {
        return c >= '0' && c <= '9';
    }

    /** The decimal value of s[i:i+len] when all are ASCII digits, else -1. */
    private static int digits(String s, int i, int len) {
        if (i + len > s.length()) {
            return -1;
        }
        int v = 0;
        for (int k = i; k < i + len; k++) {
            char c = s.charAt(k);
            if (!isDigit(c)) {
                return -1;
            }
            v = v * 10 + (c - '0');
        }
        return v;
    }

    static long mulSat(long a, long b) {
        long hi = Math.multiplyHigh(a, b), lo = a * b;
        if ((hi == 0 && lo >= 0) || (hi == -1 && lo < 0)) {
            return lo;
        }
        return (a < 0) != (b < 0) ? Long.MIN_VALUE : Long.MAX_VALUE;
    }

    static long addSat(long a, long b) {
        long r = a + b;
        if (((a ^ r) & (b ^ r)) < 0) {
            return a < 0 ? Long.MIN_VALUE : Long.MAX_VALUE;
        }
        return r;
    }

    private static boolean noneOf(String s, String chars) {
        for (int i = 0; i < chars.length(); i++) {
            if (s.indexOf(chars.charAt(i)) >= 0) {
                return false;
            }
        }
        return true;
    }

    static String clip(String s) {
        return s.length() > 40 ? s.substring(0, 40) + "…" : s;
    }

    /** Go's strings.TrimSpace: Unicode White_Space at both ends. */
    static String goTrimSpace(String s) {
        int b = 0, e = s.length();
        while (b < e && isGoSpace(s.charAt(b))) {
            b++;
        }
        while (e > b && isGoSpace(s.charAt(e - 1))) {
            e--;
        }
        return (b == 0 && e == s.length()) ? s : s.substring(b, e);
    }

    private static boolean isGoSpace(char c) {
        switch (c) {
            case '\t', '\n', 0x0B, '\f', '\r', ' ', 0x85, 0xA0:
                return true;
            default:
                if (c < 0x100) {
                    return false;
                }
                int t = Character.getType(c);
                return t == Character.SPACE_SEPARATOR || t == Character.LINE_SEPARATOR || t == Character.PARAGRAPH_SEPARATOR;
        }
    }

    /** A bounded cache of the schemas of columns headers (producers use a handful of layouts). */
    static final class Schemas {
        private final Map<String, Schema> byHeader = new HashMap<>();

        Schema forHeader(String header) throws RowException {
            Schema s = byHeader.get(header);
            if (s != null) {
                return s;
            }
            if (header.length() > 4096) {
                throw new RowException(BAD_HEADER, "columns header is not valid UTF-8 or too long");
            }
            try {
                s = Schema.parseColumns(header);
            } catch (IllegalArgumentException e) {
                throw new RowException(BAD_HEADER, "columns header \"" + header + "\": " + e.getMessage());
            }
            if (byHeader.size() >= 64) {
                byHeader.clear();
            }
            byHeader.put(header, s);
            return s;
        }
    }
}
