package io.github.txstream.kstreams;

import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.StoreBuilder;
import org.apache.kafka.streams.state.Stores;
import org.apache.kafka.common.utils.Bytes;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The Kafka Streams peer of txstream's consumer (README.md): the same per-account
 * aggregates with the same dedup rule, exactly-once v2, RocksDB state.
 *
 * <pre>
 * java -cp CLASSPATH io.github.txstream.kstreams.Peer --bootstrap-servers HOST:PORT --application-id ID \
 *     --state-dir DIR [--input transactions] [--output transactions-out] [--dlq transactions-dlq] \
 *     [--commit-interval-ms 1000] [--dedup-window 168h] [--instance-id ID] [--caching false]
 * </pre>
 */
public final class Peer {
    private static final Logger log = LoggerFactory.getLogger(Peer.class);

    private Peer() {}

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        a.put("input", "transactions");
        a.put("output", "transactions-out");
        a.put("dlq", "transactions-dlq");
        a.put("commit-interval-ms", "1000"); // txstream's --commit-interval default (1s)
        a.put("dedup-window", "168h"); // txstream's --dedup-window default
        a.put("max-line-bytes", "0");
        a.put("caching", "false"); // the store builder's default
        for (int i = 0; i < args.length; i++) {
            String k = args[i];
            if (!k.startsWith("--") || i + 1 >= args.length) {
                usage("bad argument " + k);
            }
            a.put(k.substring(2), args[++i]);
        }
        for (String req : new String[] {"bootstrap-servers", "application-id", "state-dir"}) {
            if (!a.containsKey(req)) {
                usage("--" + req + " is required");
            }
        }
        long commitMs = Long.parseLong(a.get("commit-interval-ms"));
        Duration window = parseGoDuration(a.get("dedup-window"));

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.get("application-id"));
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.get("bootstrap-servers"));
        p.put(StreamsConfig.STATE_DIR_CONFIG, a.get("state-dir"));
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        // EOS defaults to 100 ms; txstream commits an epoch every second by default.
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.toString(commitMs));
        if (a.containsKey("instance-id")) {
            // Static membership, as the benchmark runs txstream (--instance-id): a
            // restarted instance gets its tasks back without waiting for the session
            // timeout of its dead predecessor.
            p.put(StreamsConfig.consumerPrefix(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG), a.get("instance-id"));
        }

        StoreBuilder<KeyValueStore<Bytes, byte[]>> store = Stores.keyValueStoreBuilder(
                Stores.persistentKeyValueStore(AggregateProcessor.STORE), Serdes.Bytes(), Serdes.ByteArray());
        if (Boolean.parseBoolean(a.get("caching"))) {
            // Off by default (the Processor API store builder's default); the DSL
            // caches its stores (statestore.cache.max.bytes, 10 MiB by default).
            store = store.withCachingEnabled();
        }
        int maxLine = Integer.parseInt(a.get("max-line-bytes"));
        Topology t = new Topology();
        t.addSource("in", new ByteArrayDeserializer(), new ByteArrayDeserializer(), a.get("input"));
        t.addProcessor("aggregate", () -> new AggregateProcessor(window, maxLine, commitMs), "in");
        t.addStateStore(store, "aggregate");
        t.addSink(AggregateProcessor.OUT, a.get("output"), new ByteArraySerializer(), new ByteArraySerializer(), "aggregate");
        t.addSink(AggregateProcessor.DLQ, a.get("dlq"), new ByteArraySerializer(), new ByteArraySerializer(), "aggregate");
        log.info("topology: {}", t.describe());

        KafkaStreams streams = new KafkaStreams(t, p);
        CountDownLatch done = new CountDownLatch(1);
        int[] status = {0};
        streams.setUncaughtExceptionHandler(e -> {
            log.error("stream thread failed; shutting down", e);
            status[0] = 1;
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        streams.setStateListener((now, before) -> {
            log.info("state {} -> {}", before, now);
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                done.countDown();
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            streams.close(Duration.ofSeconds(30));
            done.countDown();
        }, "shutdown"));
        streams.start();
        done.await();
        streams.close(Duration.ofSeconds(30));
        System.exit(status[0]);
    }

    /** Go's time.ParseDuration for the forms used here: a number and h, m, s or ms. */
    static Duration parseGoDuration(String s) {
        if (s.endsWith("ms")) {
            return Duration.ofMillis(Long.parseLong(s.substring(0, s.length() - 2)));
        }
        long n = Long.parseLong(s.substring(0, s.length() - 1));
        return switch (s.charAt(s.length() - 1)) {
            case 'h' -> Duration.ofHours(n);
            case 'm' -> Duration.ofMinutes(n);
            case 's' -> Duration.ofSeconds(n);
            default -> throw new IllegalArgumentException("duration " + s + ": want <n>h, <n>m, <n>s or <n>ms");
        };
    }

    private static void usage(String why) {
        System.err.println("Peer: " + why);
        System.err.println("usage: Peer --bootstrap-servers HOST:PORT --application-id ID --state-dir DIR"
                + " [--input T] [--output T] [--dlq T] [--commit-interval-ms N] [--dedup-window 168h]"
                + " [--instance-id ID] [--caching true|false] [--max-line-bytes N]");
        System.exit(2);
    }
}
