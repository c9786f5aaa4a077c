<?php
/**
 * Signing: the shared vectors, tampering, the 5-minute window, the REST gate and SSO tokens.
 *
 * @package KC_Sidecar
 */

/**
 * @covers KC_Sidecar_Signing
 */
class SigningTest extends KC_Test_Case {

	/**
	 * The vectors shared with the Python side (tests/wordpress/signing_vectors.json).
	 */
	private static function vectors(): array {
		return json_decode( file_get_contents( dirname( __DIR__, 3 ) . '/tests/wordpress/signing_vectors.json' ), true );
	}

	public function test_shared_vectors_sign_and_verify(): void {
		$v = self::vectors();
		$this->assertNotEmpty( $v['requests'] );
		foreach ( $v['requests'] as $r ) {
			$this->assertSame( $r['signature'], KC_Sidecar_Signing::sign( $v['secret'], $r['method'], $r['path'], $r['timestamp'], $r['body'] ), $r['method'] . ' ' . $r['path'] );
			$this->assertTrue( KC_Sidecar_Signing::verify( $v['secret'], $r['method'], $r['path'], $r['timestamp'], $r['signature'], $r['body'], (int) $r['timestamp'] ) );
		}
	}

	public function test_shared_sso_vector(): void {
		$v = self::vectors();
		$this->assertSame( $v['sso']['token'], KC_Sidecar_Signing::sso_token( $v['secret'], json_decode( $v['sso']['payload_json'], true ) ) );
	}

	public function test_method_is_upper_cased_in_the_message(): void {
		$this->assertSame( "PUT\n/p\n1\nb", KC_Sidecar_Signing::message( 'put', '/p', '1', 'b' ) );
	}

	public function test_any_tampering_is_a_bad_signature(): void {
		$v   = self::vectors();
		$r   = $v['requests'][0];
		$now = (int) $r['timestamp'];
		$cases = array(
			'method'    => array( 'POST', $r['path'], $r['timestamp'], $r['signature'], $r['body'] ),
			'path'      => array( $r['method'], '/wp-json/kc-sidecar/v1/mail', $r['timestamp'], $r['signature'], $r['body'] ),
			'timestamp' => array( $r['method'], $r['path'], (string) ( $now + 1 ), $r['signature'], $r['body'] ),
			'body'      => array( $r['method'], $r['path'], $r['timestamp'], $r['signature'], $r['body'] . ' ' ),
			'signature' => array( $r['method'], $r['path'], $r['timestamp'], strtoupper( $r['signature'] ), $r['body'] ),
			'no prefix' => array( $r['method'], $r['path'], $r['timestamp'], substr( $r['signature'], 3 ), $r['body'] ),
			'missing'   => array( $r['method'], $r['path'], $r['timestamp'], null, $r['body'] ),
			'no time'   => array( $r['method'], $r['path'], null, $r['signature'], $r['body'] ),
			'bad time'  => array( $r['method'], $r['path'], '17e8', $r['signature'], $r['body'] ),
		);
		foreach ( $cases as $name => list( $method, $path, $timestamp, $signature, $body ) ) {
			$result = KC_Sidecar_Signing::verify( $v['secret'], $method, $path, $timestamp, $signature, $body, $now );
			$this->assertError( 'kc_sidecar_bad_signature', 401, $result );
		}
		$this->assertError( 'kc_sidecar_bad_signature', 401, KC_Sidecar_Signing::verify( 'another-secret', $r['method'], $r['path'], $r['timestamp'], $r['signature'], $r['body'], $now ) );
	}

	public function test_timestamp_window_is_300_seconds_both_ways(): void {
		$ts  = '1795000000';
		$sig = KC_Sidecar_Signing::sign( self::SECRET, 'GET', '/s', $ts, '' );
		foreach ( array( -300, 0, 300 ) as $skew ) {
			$this->assertTrue( KC_Sidecar_Signing::verify( self::SECRET, 'GET', '/s', $ts, $sig, '', 1795000000 + $skew ) );
		}
		foreach ( array( -301, 301, 86400 ) as $skew ) {
			$this->assertError( 'kc_sidecar_stale_request', 401, KC_Sidecar_Signing::verify( self::SECRET, 'GET', '/s', $ts, $sig, '', 1795000000 + $skew ) );
		}
	}

	public function test_missing_secret_is_not_configured(): void {
		$this->assertError( 'kc_sidecar_not_configured', 503, KC_Sidecar_Signing::verify( '', 'GET', '/s', '1', 'v1=00', '' ) );
	}

	public function test_headers_sign_the_url_path_only(): void {
		$headers = KC_Sidecar_Signing::headers( self::SECRET, 'post', 'https://sidecar.example/base/hooks/kivicare?x=1', '{}', 1795000000 );
		$this->assertSame( '1795000000', $headers['X-KC-Sidecar-Timestamp'] );
		$this->assertSame( KC_Sidecar_Signing::sign( self::SECRET, 'POST', '/base/hooks/kivicare', '1795000000', '{}' ), $headers['X-KC-Sidecar-Signature'] );
	}

	public function test_rest_gate_uses_the_requested_path_and_raw_body(): void {
		$body = '{"to":["a@example.com"]}';
		$ts   = (string) time();
		$req  = $this->request( 'POST', $body );
		$req->set_header( 'X-KC-Sidecar-Timestamp', $ts );
		$req->set_header( 'X-KC-Sidecar-Signature', KC_Sidecar_Signing::sign( self::SECRET, 'POST', '/wp-json/kc-sidecar/v1/mail', $ts, $body ) );

		$_SERVER['REQUEST_URI'] = '/wp-json/kc-sidecar/v1/mail?ignored=1';
		$this->assertTrue( KC_Sidecar_Rest::permission( $req ) );

		$_SERVER['REQUEST_URI'] = '/wp-json/kc-sidecar/v1/busy';
		$this->assertError( 'kc_sidecar_bad_signature', 401, KC_Sidecar_Rest::permission( $req ) );

		update_option( KC_Sidecar_Plugin::OPT_SECRET, '' );
		$this->assertError( 'kc_sidecar_not_configured', 503, KC_Sidecar_Rest::permission( $req ) );
	}

	public function test_secret_is_never_shown_in_full(): void {
		$secret = 'AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-xyZ9';
		$shown  = KC_Sidecar_Settings::mask( $secret );
		$this->assertStringEndsWith( 'yZ9', $shown );
		$this->assertStringNotContainsString( substr( $secret, 0, 8 ), $shown );
		$this->assertSame( '', KC_Sidecar_Settings::mask( '' ) );
		$this->assertStringNotContainsString( 'short', KC_Sidecar_Settings::mask( 'short-secret' ) );
	}

	public function test_status_lists_features_and_site_timezone(): void {
		$data = KC_Sidecar_Rest::status()->get_data();
		$this->assertTrue( $data['ok'] );
		$this->assertSame( '1.0.0', $data['plugin_version'] );
		$this->assertNull( $data['kivicare_version'] );
		$this->assertSame( array( 'hints', 'busy', 'meet', 'reschedule', 'mail', 'sso' ), $data['features'] );
		$this->assertSame( 'Europe/Paris', $data['site_timezone'] );
	}
}
