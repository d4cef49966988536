package status

// Murmur2 is Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2),
// returned as the Java int it computes. Together with PartitionForKey it
// reproduces the partition that the Java client's and franz-go's default
// partitioners choose for a keyed record.
func Murmur2(data []byte) int32 {
	const (
		seed uint32 = 0x9747b28c
		m    uint32 = 0x5bd1e995
		r           = 24
	)
	length := len(data)
	h := seed ^ uint32(length)
	n := length / 4
	for i := 0; i < n; i++ {
		i4 := i * 4
		k := uint32(data[i4]) | uint32(data[i4+1])<<8 | uint32(data[i4+2])<<16 | uint32(data[i4+3])<<24
		k *= m
		k ^= k >> r
		k *= m
		h *= m
		h ^= k
	}
	tail := length &^ 3
	switch length % 4 {
	case 3:
		h ^= uint32(data[tail+2]) << 16
		fallthrough
	case 2:
		h ^= uint32(data[tail+1]) << 8
		fallthrough
	case 1:
		h ^= uint32(data[tail])
		h *= m
	}
	h ^= h >> 13
	h *= m
	h ^= h >> 15
	return int32(h)
}

// PartitionForKey is Kafka's default partition of a keyed record:
// toPositive(murmur2(key)) % partitions, where toPositive clears the sign
// bit (not Math.abs). It returns -1 when partitions is not positive.
func PartitionForKey(key []byte, partitions int32) int32 {
	if partitions <= 0 {
		return -1
	}
	return int32(uint32(Murmur2(key))&0x7fffffff) % partitions
}
