package io.github.txstream.kstreams;

import java.math.BigDecimal;
import java.math.BigInteger;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.Headers;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.processor.PunctuationType;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.processor.api.RecordMetadata;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;

/**
 * txstream's aggregate operator (aggregate.Aggregator.Process) as a Kafka
 * Streams processor, one instance per task (input partition), over one
 * key-value store per task with txstream's state layout:
 *
 * <pre>
 *   a/&lt;account&gt;               the account's aggregate
 *   d/&lt;account&gt; 0x00 &lt;txid&gt;   dedup entry: time seen (ns), content hash
 *   x/&lt;seen&gt; &lt;dedup key&gt;       time index of the dedup entries
 *   m/watermark               the partition's watermark W (ns)
 * </pre>
 *
 * The decisions are txstream's: W is the largest min(record time, Kafka
 * timestamp) so far; a dedup entry is live while seen &gt;= W - window; a live
 * entry within the window of the record's time makes it a duplicate (same
 * content: dropped) or a conflicting duplicate (dead letter); a record more
 * than the window behind W is a late record (dead letter). Expired entries are
 * removed by a wall-clock punctuator every commit interval (txstream expires
 * between epochs).
 */
final class AggregateProcessor implements Processor<byte[], byte[], byte[], byte[]> {
    static final String STORE = "state";
    static final String OUT = "out";
    static final String DLQ = "dlq";

    static final String LATE_RECORD = "late_record";
    static final String AMOUNT_OVERFLOW = "amount_overflow";
    static final int DECIMAL_PRECISION = 60; // apd context of txstream

    static final String H_REASON = "txstream-dlq-reason";
    static final String H_DETAIL = "txstream-dlq-detail";
    static final String H_TOPIC = "txstream-source-topic";
    static final String H_PARTITION = "txstream-source-partition";
    static final String H_OFFSET = "txstream-source-offset";
    static final String H_TRUNCATED = "txstream-dlq-truncated-from";
    static final int DLQ_MAX_VALUE = 64 << 10;

    private static final Bytes WATERMARK_KEY = Bytes.wrap("m/watermark".getBytes(StandardCharsets.US_ASCII));
    private static final byte[] INDEX_PREFIX = {'x', '/'};

    private final long windowNanos;
    private final int maxLineBytes;
    private final long expireEveryMs;
    private final Csv.Schema defaultSchema = new Csv.Schema(Csv.DEFAULT_COLUMNS);
    private final Csv.Schemas schemas = new Csv.Schemas();
    private final Csv.Parser parser = new Csv.Parser();
    private final StringBuilder json = new StringBuilder(256);

    private ProcessorContext<byte[], byte[]> ctx;
    private KeyValueStore<Bytes, byte[]> store;
    /** The store's m/watermark, read once per init (the processor is initialised again whenever its task's state is). */
    private long watermark;
    private boolean watermarkLoaded;
    /** Every index key below it has been deleted (an in-memory hint, as in txstream's Expire). */
    private byte[] cursor;

    AggregateProcessor(Duration dedupWindow, int maxLineBytes, long expireEveryMs) {
        this.windowNanos = dedupWindow.toNanos();
        this.maxLineBytes = maxLineBytes;
        this.expireEveryMs = expireEveryMs;
    }

    @Override
    public void init(ProcessorContext<byte[], byte[]> context) {
        ctx = context;
        store = context.getStateStore(STORE);
        watermarkLoaded = false;
        cursor = null;
        context.schedule(Duration.ofMillis(expireEveryMs), PunctuationType.WALL_CLOCK_TIME, now -> expire());
    }

    @Override
    public void process(Record<byte[], byte[]> rec) {
        byte[] value = rec.value() == null ? new byte[0] : rec.value();
        Csv.Schema schema = defaultSchema;
        Header ch = firstHeader(rec.headers(), Csv.HEADER_COLUMNS);
        Csv.Row row;
        try {
            if (ch != null) {
                schema = schemas.forHeader(strictUtf8(ch.value()));
            }
            row = parser.parseLine(schema, value, maxLineBytes);
        } catch (Csv.RowException e) {
            deadLetter(rec, e.reason, e.getMessage());
            return;
        }
        long kafkaNanos = Csv.mulSat(rec.timestamp(), 1_000_000L);
        long t = row.hasTime ? row.timeNanos : kafkaNanos;
        String account = row.key();
        long h = contentHash(schema, row);

        // The watermark includes this record.
        long w = watermark();
        long c = Math.min(t, kafkaNanos);
        if (c > w) {
            w = c;
            watermark = w;
            store.put(WATERMARK_KEY, ByteBuffer.allocate(8).putLong(w).array());
        }
        long live = liveFrom(w);

        byte[] dk = dedupKey(account, row.transactionId);
        boolean replaces = false;
        long seen = 0;
        byte[] v = store.get(Bytes.wrap(dk));
        if (v != null && v.length == 16) {
            ByteBuffer bb = ByteBuffer.wrap(v);
            replaces = true;
            seen = bb.getLong(0);
            if (seen >= live && within(t, seen)) {
                if (bb.getLong(8) == h) {
                    return; // duplicate
                }
                deadLetter(rec, Csv.CONFLICTING_DUPLICATE, "transaction_id \"" + row.transactionId + "\" was seen at "
                        + formatNanos(seen) + " with different content");
                return;
            }
        }

        BigDecimal amt;
        try {
            amt = new BigDecimal(row.amount);
        } catch (NumberFormatException e) {
            deadLetter(rec, Csv.INVALID_AMOUNT, String.valueOf(e.getMessage()));
            return;
        }
        if (t < live) {
            deadLetter(rec, LATE_RECORD, "record time " + formatNanos(t) + " is more than the dedup window ("
                    + Duration.ofNanos(windowNanos) + ") behind the partition's watermark " + formatNanos(w));
            return;
        }
        Bytes ak = Bytes.wrap(accountKey(account));
        AccountState s = AccountState.decode(store.get(ak));
        if (s.count == 0) {
            s.min = amt;
            s.max = amt;
            s.first = t;
            s.last = t;
        } else {
            if (amt.compareTo(s.min) < 0) {
                s.min = amt;
            }
            if (amt.compareTo(s.max) > 0) {
                s.max = amt;
            }
            s.first = Math.min(s.first, t);
            s.last = Math.max(s.last, t);
        }
        BigDecimal total = s.total.add(amt);
        if (total.precision() > DECIMAL_PRECISION) {
            deadLetter(rec, AMOUNT_OVERFLOW, "account \"" + account + "\" total would exceed " + DECIMAL_PRECISION + " digits");
            return;
        }
        s.total = total;
        s.count++;
        RecordMetadata md = ctx.recordMetadata().orElseThrow();
        s.lastOffset = md.offset();
        store.put(ak, s.encode());

        // The dedup entry and its index entry (exactly one index entry per dedup entry).
        if (replaces) {
            store.delete(Bytes.wrap(indexKey(seen, dk)));
        }
        store.put(Bytes.wrap(dk), ByteBuffer.allocate(16).putLong(t).putLong(h).array());
        store.put(Bytes.wrap(indexKey(t, dk)), new byte[0]);

        byte[] out = output(rec, row, account, s, md);
        ctx.forward(new Record<>(account.getBytes(StandardCharsets.UTF_8), out, rec.timestamp()), OUT);
    }

    /** Removes every dedup entry that is no longer live (txstream's Expire, without a budget). */
    private void expire() {
        long w = watermark();
        if (w == Long.MIN_VALUE) {
            return;
        }
        byte[] upper = ByteBuffer.allocate(10).put(INDEX_PREFIX).putLong(orderedNanos(liveFrom(w))).array();
        byte[] lower = cursor != null ? cursor : INDEX_PREFIX;
        if (Arrays.compareUnsigned(lower, upper) >= 0) {
            return;
        }
        // range is inclusive at both ends; no index key equals upper (each has a dedup key after the time).
        List<Bytes> keys = new ArrayList<>();
        try (KeyValueIterator<Bytes, byte[]> it = store.range(Bytes.wrap(lower), Bytes.wrap(upper))) {
            while (it.hasNext()) {
                KeyValue<Bytes, byte[]> kv = it.next();
                keys.add(kv.key);
            }
        }
        if (keys.isEmpty()) {
            return;
        }
        for (Bytes k : keys) {
            byte[] ik = k.get();
            store.delete(Bytes.wrap(Arrays.copyOfRange(ik, INDEX_PREFIX.length + 8, ik.length)));
            store.delete(k);
        }
        byte[] last = keys.get(keys.size() - 1).get();
        cursor = Arrays.copyOf(last, last.length + 1);
    }

    private long watermark() {
        if (!watermarkLoaded) {
            byte[] v = store.get(WATERMARK_KEY);
            watermark = (v != null && v.length == 8) ? ByteBuffer.wrap(v).getLong() : Long.MIN_VALUE;
            watermarkLoaded = true;
        }
        return watermark;
    }

    private long liveFrom(long w) {
        if (w < Long.MIN_VALUE + windowNanos) {
            return Long.MIN_VALUE;
        }
        return w - windowNanos;
    }

    /** |t - seen| &lt;= window without overflowing. */
    private boolean within(long t, long seen) {
        long d = t >= seen ? t - seen : seen - t; // as unsigned
        return Long.compareUnsigned(d, windowNanos) <= 0;
    }

    static long orderedNanos(long ns) {
        return ns ^ Long.MIN_VALUE;
    }

    private static byte[] accountKey(String account) {
        byte[] a = account.getBytes(StandardCharsets.UTF_8);
        byte[] k = new byte[2 + a.length];
        k[0] = 'a';
        k[1] = '/';
        System.arraycopy(a, 0, k, 2, a.length);
        return k;
    }

    private static byte[] dedupKey(String account, String txid) {
        byte[] a = account.getBytes(StandardCharsets.UTF_8);
        byte[] x = txid.getBytes(StandardCharsets.UTF_8);
        byte[] k = new byte[2 + a.length + 1 + x.length];
        k[0] = 'd';
        k[1] = '/';
        System.arraycopy(a, 0, k, 2, a.length);
        k[2 + a.length] = 0;
        System.arraycopy(x, 0, k, 3 + a.length, x.length);
        return k;
    }

    private static byte[] indexKey(long seen, byte[] dk) {
        return ByteBuffer.allocate(2 + 8 + dk.length).put(INDEX_PREFIX).putLong(orderedNanos(seen)).put(dk).array();
    }

    private static final long FNV_OFFSET = 0xcbf29ce484222325L;
    private static final long FNV_PRIME = 0x100000001b3L;

    /** FNV-64a over every column but transaction_id in column-name order: name, 0, trimmed value, 0. */
    static long contentHash(Csv.Schema s, Csv.Row r) {
        long h = FNV_OFFSET;
        for (int i : s.hashOrder) {
            h = fnv(h, s.colBytes[i]);
            h = (h ^ 0) * FNV_PRIME;
            h = fnv(h, Csv.goTrimSpace(r.fields[i]).getBytes(StandardCharsets.UTF_8));
            h = (h ^ 0) * FNV_PRIME;
        }
        return h;
    }

    private static long fnv(long h, byte[] b) {
        for (byte x : b) {
            h ^= (x & 0xff);
            h *= FNV_PRIME;
        }
        return h;
    }

    private static Header firstHeader(Headers hs, String key) {
        for (Header h : hs) {
            if (h.key().equals(key)) {
                return h;
            }
        }
        return null;
    }

    private static String strictUtf8(byte[] b) throws Csv.RowException {
        if (b == null) {
            b = new byte[0];
        }
        try {
            return StandardCharsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT).decode(ByteBuffer.wrap(b)).toString();
        } catch (CharacterCodingException e) {
            throw new Csv.RowException(Csv.BAD_HEADER, "columns header is not valid UTF-8 or too long");
        }
    }

    private void deadLetter(Record<byte[], byte[]> rec, String reason, String detail) {
        RecordMetadata md = ctx.recordMetadata().orElseThrow();
        Headers hs = new RecordHeaders();
        int size = 0;
        for (Header h : rec.headers()) {
            size += h.key().length() + (h.value() == null ? 0 : h.value().length);
            if (size > 16 << 10) {
                break;
            }
            hs.add(h);
        }
        if (detail == null) {
            detail = "";
        }
        if (detail.length() > 4096) {
            detail = detail.substring(0, 4096);
        }
        hs.add(H_REASON, reason.getBytes(StandardCharsets.UTF_8));
        hs.add(H_DETAIL, detail.getBytes(StandardCharsets.UTF_8));
        hs.add(H_TOPIC, md.topic().getBytes(StandardCharsets.UTF_8));
        hs.add(H_PARTITION, Integer.toString(md.partition()).getBytes(StandardCharsets.US_ASCII));
        hs.add(H_OFFSET, Long.toString(md.offset()).getBytes(StandardCharsets.US_ASCII));
        byte[] value = rec.value();
        if (value != null && value.length > DLQ_MAX_VALUE) {
            hs.add(H_TRUNCATED, Integer.toString(value.length).getBytes(StandardCharsets.US_ASCII));
            value = Arrays.copyOf(value, DLQ_MAX_VALUE);
        }
        byte[] key = rec.key();
        if (key != null && key.length > 1024) {
            key = Arrays.copyOf(key, 1024);
        }
        ctx.forward(new Record<>(key, value, rec.timestamp(), hs), DLQ);
    }

    /** The output JSON, txstream's fields in txstream's order. */
    private byte[] output(Record<byte[], byte[]> rec, Csv.Row row, String account, AccountState s, RecordMetadata md) {
        StringBuilder b = json;
        b.setLength(0);
        b.append("{\"transaction_id\":");
        jsonString(b, row.transactionId);
        b.append(",\"account_id\":");
        jsonString(b, account);
        b.append(",\"amount\":");
        jsonString(b, row.amount);
        b.append(",\"timestamp\":");
        jsonString(b, !row.timestamp.isEmpty() ? row.timestamp : formatNanos(Csv.mulSat(rec.timestamp(), 1_000_000L)));
        b.append(",\"account_count\":").append(s.count);
        b.append(",\"account_total\":\"").append(s.total.toPlainString());
        b.append("\",\"account_min\":\"").append(s.min.toPlainString());
        b.append("\",\"account_max\":\"").append(s.max.toPlainString());
        b.append("\",\"partition\":").append(md.partition());
        b.append(",\"offset\":").append(md.offset());
        b.append('}');
        return b.toString().getBytes(StandardCharsets.UTF_8);
    }

    private static final String HEX = "0123456789abcdef";

    private static void jsonString(StringBuilder b, String s) {
        b.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '"' || c == '\\') {
                b.append('\\').append(c);
            } else if (c < 0x20) {
                b.append("\\u00").append(HEX.charAt(c >> 4)).append(HEX.charAt(c & 0xf));
            } else {
                b.append(c);
            }
        }
        b.append('"');
    }

    /** RFC 3339 with the fraction's trailing zeros dropped (Go's time.RFC3339Nano), UTC. */
    static String formatNanos(long ns) {
        Instant i = Instant.ofEpochSecond(Math.floorDiv(ns, 1_000_000_000L), Math.floorMod(ns, 1_000_000_000L));
        String base = DateTimeFormatter.ISO_INSTANT.format(Instant.ofEpochSecond(i.getEpochSecond()));
        if (i.getNano() == 0) {
            return base;
        }
        String frac = String.format("%09d", i.getNano()).replaceAll("0+$", "");
        return base.substring(0, base.length() - 1) + "." + frac + "Z";
    }

    /** The per-account aggregate: count, exact total, min, max, first and last record time, last input offset. */
    static final class AccountState {
        long count;
        BigDecimal total = BigDecimal.ZERO;
        BigDecimal min = BigDecimal.ZERO;
        BigDecimal max = BigDecimal.ZERO;
        long first, last, lastOffset;

        static AccountState decode(byte[] v) {
            AccountState s = new AccountState();
            if (v == null) {
                return s;
            }
            ByteBuffer b = ByteBuffer.wrap(v);
            s.count = b.getLong();
            s.first = b.getLong();
            s.last = b.getLong();
            s.lastOffset = b.getLong();
            s.total = getDecimal(b);
            s.min = getDecimal(b);
            s.max = getDecimal(b);
            return s;
        }

        byte[] encode() {
            byte[] t = total.unscaledValue().toByteArray(), mn = min.unscaledValue().toByteArray(),
                    mx = max.unscaledValue().toByteArray();
            ByteBuffer b = ByteBuffer.allocate(32 + 3 * 5 + t.length + mn.length + mx.length);
            b.putLong(count).putLong(first).putLong(last).putLong(lastOffset);
            putDecimal(b, total.scale(), t);
            putDecimal(b, min.scale(), mn);
            putDecimal(b, max.scale(), mx);
            return b.array();
        }

        private static void putDecimal(ByteBuffer b, int scale, byte[] unscaled) {
            b.putInt(scale).put((byte) unscaled.length).put(unscaled);
        }

        private static BigDecimal getDecimal(ByteBuffer b) {
            int scale = b.getInt();
            byte[] u = new byte[b.get() & 0xff];
            b.get(u);
            return new BigDecimal(new BigInteger(u), scale);
        }
    }
}
