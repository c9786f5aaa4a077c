<?php
/**
 * Unit-test bootstrap: just enough of WordPress, stubbed in memory, to run the plugin's classes
 * without a database. `KC_Test` holds the stub state; each test resets it.
 *
 * @package KC_Sidecar
 */

define( 'ABSPATH', __DIR__ . '/' );
define( 'KC_SIDECAR_VERSION', '1.0.0' );
define( 'KC_SIDECAR_FILE', dirname( __DIR__ ) . '/kivicare-sidecar-bridge/kivicare-sidecar-bridge.php' );
define( 'ARRAY_A', 'ARRAY_A' );
define( 'MINUTE_IN_SECONDS', 60 );

/**
 * Stub state shared by the fake WordPress functions.
 */
final class KC_Test {
	/** @var array Options. */
	public static $options = array();
	/** @var array user id => [meta key => value]. */
	public static $user_meta = array();
	/** @var array user id => user object. */
	public static $users = array();
	/** @var array Hook name => list of callbacks. */
	public static $hooks = array();
	/** @var array Fired actions: [name, args]. */
	public static $fired = array();
	/** @var array Sent mails: [to, subject, body]. */
	public static $mails = array();
	/** @var bool What wp_mail returns. */
	public static $mail_result = true;
	/** @var array Remote posts: [url, args]. */
	public static $posts = array();
	/** @var int Current user id. */
	public static $current_user = 0;

	/**
	 * Back to a blank site in Europe/Paris.
	 */
	public static function reset(): void {
		self::$options      = array(
			'timezone_string' => 'Europe/Paris',
			'date_format'     => 'Y-m-d',
			'time_format'     => 'H:i',
			'blogname'        => 'Riverside Clinic',
		);
		self::$user_meta    = array();
		self::$users        = array();
		self::$hooks        = array();
		self::$fired        = array();
		self::$mails        = array();
		self::$mail_result  = true;
		self::$posts        = array();
		self::$current_user = 0;
	}

	/**
	 * Adds a user.
	 *
	 * @param int    $id    User id.
	 * @param string $name  Display name.
	 * @param string $email E-mail.
	 * @param array  $roles Roles.
	 * @param string $tz    User-meta timezone ('' = none).
	 */
	public static function user( int $id, string $name, string $email, array $roles, string $tz = '' ): object {
		$user                = new WP_User( $id, $name, $email, $roles );
		self::$users[ $id ]  = $user;
		if ( '' !== $tz ) {
			self::$user_meta[ $id ]['timezone'] = $tz;
		}
		return $user;
	}
}

/** Minimal WP_User. */
class WP_User {
	public $ID;
	public $display_name;
	public $user_email;
	public $roles;
	public function __construct( $id = 0, $name = '', $email = '', $roles = array() ) {
		$this->ID           = $id;
		$this->display_name = $name;
		$this->user_email   = $email;
		$this->roles        = $roles;
	}
	public function exists() {
		return $this->ID > 0;
	}
}

/** Minimal WP_Error. */
class WP_Error {
	private $code;
	private $message;
	private $data;
	public function __construct( $code = '', $message = '', $data = '' ) {
		$this->code    = $code;
		$this->message = $message;
		$this->data    = $data;
	}
	public function get_error_code() {
		return $this->code;
	}
	public function get_error_message() {
		return $this->message;
	}
	public function get_error_data() {
		return $this->data;
	}
}

/** Minimal WP_REST_Request. */
class WP_REST_Request implements ArrayAccess {
	private $method;
	private $body;
	private $headers = array();
	private $params  = array();
	public function __construct( $method = 'GET', $route = '', $params = array() ) {
		$this->method = strtoupper( $method );
		$this->params = $params;
	}
	public function get_method() {
		return $this->method;
	}
	public function set_body( $body ) {
		$this->body = $body;
	}
	public function get_body() {
		return $this->body;
	}
	public function set_header( $name, $value ) {
		$this->headers[ strtolower( str_replace( '-', '_', $name ) ) ] = $value;
	}
	public function get_header( $name ) {
		return $this->headers[ strtolower( str_replace( '-', '_', $name ) ) ] ?? null;
	}
	public function offsetExists( $key ): bool {
		return isset( $this->params[ $key ] );
	}
	#[\ReturnTypeWillChange]
	public function offsetGet( $key ) {
		return $this->params[ $key ] ?? null;
	}
	public function offsetSet( $key, $value ): void {
		$this->params[ $key ] = $value;
	}
	public function offsetUnset( $key ): void {
		unset( $this->params[ $key ] );
	}
}

/** Minimal WP_REST_Response. */
class WP_REST_Response {
	private $data;
	private $status;
	public function __construct( $data = null, $status = 200 ) {
		$this->data   = $data;
		$this->status = $status;
	}
	public function get_data() {
		return $this->data;
	}
	public function get_status() {
		return $this->status;
	}
}

function add_action( $hook, $callback, $priority = 10, $args = 1 ) {
	KC_Test::$hooks[ $hook ][] = array( $callback, $args );
	return true;
}
function add_filter( $hook, $callback, $priority = 10, $args = 1 ) {
	return add_action( $hook, $callback, $priority, $args );
}
function apply_filters( $hook, $value, ...$args ) {
	foreach ( KC_Test::$hooks[ $hook ] ?? array() as list( $callback, $count ) ) {
		$value = $callback( ...array_slice( array_merge( array( $value ), $args ), 0, $count ) );
	}
	return $value;
}
function do_action( $hook, ...$args ) {
	KC_Test::$fired[] = array( $hook, $args );
	foreach ( KC_Test::$hooks[ $hook ] ?? array() as list( $callback, $count ) ) {
		$callback( ...array_slice( $args, 0, $count ) );
	}
}
function get_option( $name, $default = false ) {
	return array_key_exists( $name, KC_Test::$options ) ? KC_Test::$options[ $name ] : $default;
}
function update_option( $name, $value, $autoload = null ) {
	KC_Test::$options[ $name ] = $value;
	return true;
}
function delete_option( $name ) {
	unset( KC_Test::$options[ $name ] );
	return true;
}
function untrailingslashit( $value ) {
	return rtrim( $value, '/\\' );
}
function wp_parse_url( $url, $component = -1 ) {
	return parse_url( $url, $component );
}
function wp_json_encode( $data, $options = 0 ) {
	return json_encode( $data, $options );
}
function home_url( $path = '' ) {
	return 'https://clinic.example' . $path;
}
function admin_url( $path = '' ) {
	return 'https://clinic.example/wp-admin/' . $path;
}
function wp_timezone_string() {
	return (string) get_option( 'timezone_string', 'UTC' );
}
function wp_timezone() {
	return new DateTimeZone( wp_timezone_string() );
}
function get_user_meta( $id, $key, $single = false ) {
	return KC_Test::$user_meta[ $id ][ $key ] ?? '';
}
function get_userdata( $id ) {
	return KC_Test::$users[ $id ] ?? false;
}
function wp_get_current_user() {
	return KC_Test::$users[ KC_Test::$current_user ] ?? new WP_User();
}
function is_email( $email ) {
	return filter_var( $email, FILTER_VALIDATE_EMAIL ) ? $email : false;
}
function wp_mail( $to, $subject, $body, $headers = array() ) {
	KC_Test::$mails[] = array( $to, $subject, $body );
	return KC_Test::$mail_result;
}
function wp_remote_post( $url, $args ) {
	KC_Test::$posts[] = array( $url, $args );
	return array();
}
function sanitize_text_field( $text ) {
	return trim( preg_replace( '/[\r\n\t ]+/', ' ', strip_tags( (string) $text ) ) );
}
function esc_url_raw( $url, $protocols = null ) {
	return filter_var( $url, FILTER_VALIDATE_URL ) ? $url : '';
}
function absint( $value ) {
	return abs( (int) $value );
}
function is_wp_error( $thing ) {
	return $thing instanceof WP_Error;
}
function wp_date( $format, $timestamp, $zone = null ) {
	return ( new DateTimeImmutable( '@' . $timestamp ) )->setTimezone( $zone ?? wp_timezone() )->format( $format );
}
function wp_specialchars_decode( $text, $quotes = 0 ) {
	return htmlspecialchars_decode( $text, ENT_QUOTES );
}
function __( $text, $domain = '' ) {
	return $text;
}
function wp_unslash( $value ) {
	return is_string( $value ) ? stripslashes( $value ) : $value;
}

$kc_plugin = dirname( __DIR__ ) . '/kivicare-sidecar-bridge/includes/';
foreach ( array( 'plugin', 'db', 'time', 'signing', 'rest', 'hints', 'busy', 'meet', 'mail', 'reschedule', 'sso', 'settings' ) as $kc_part ) {
	require_once $kc_plugin . 'class-' . $kc_part . '.php';
}
require_once __DIR__ . '/FakeDB.php';
require_once __DIR__ . '/TestCase.php';
