<?php
/**
 * "Google Calendar": a wp-admin entry (Dashboard → Google Calendar) and an item in KiviCare's own
 * dashboard sidebar (its `kivicare_sidebar_data` filter) that send the logged-in staff member to
 * `{sidecar}/sso?token=…` with a signed, single-use, 2-minute token (PROTOCOL.md, "Single sign-on").
 *
 * The token is minted at click time, for the current user only, so the entry needs no nonce: a
 * forged click could only sign the victim into the sidecar as themselves, and the token never
 * reaches a third party.
 *
 * @package KC_Sidecar
 */

defined( 'ABSPATH' ) || exit;

/**
 * Single sign-on into the sidecar.
 */
final class KC_Sidecar_SSO {

	const PAGE = 'kc-sidecar-connect';

	/** Token lifetime in seconds. */
	const TTL = 120;

	/**
	 * Hooks the menu entries.
	 */
	public static function register(): void {
		add_action( 'admin_menu', array( __CLASS__, 'menu' ) );
		add_filter( 'kivicare_sidebar_data', array( __CLASS__, 'kivicare_sidebar' ), 20, 2 );
	}

	/**
	 * Dashboard → Google Calendar, for staff only; opening it redirects at once.
	 */
	public static function menu(): void {
		if ( ! self::is_staff( wp_get_current_user() ) ) {
			return;
		}
		$hook = add_submenu_page( 'index.php', __( 'Google Calendar', 'kc-sidecar' ), __( 'Google Calendar', 'kc-sidecar' ), 'read', self::PAGE, array( __CLASS__, 'render' ) );
		if ( $hook ) {
			add_action( 'load-' . $hook, array( __CLASS__, 'go' ) );
		}
	}

	/**
	 * Adds "Google Calendar" to KiviCare's dashboard sidebar for staff roles.
	 *
	 * @param mixed  $sidebar KiviCare's sidebar items.
	 * @param string $role    The current KiviCare role.
	 * @return mixed
	 */
	public static function kivicare_sidebar( $sidebar, $role = '' ) {
		if ( ! is_array( $sidebar ) || ! in_array( $role, KC_Sidecar_Plugin::STAFF_ROLES, true ) || ! KC_Sidecar_Plugin::configured() ) {
			return $sidebar;
		}
		$sidebar[] = array(
			'label'      => __( 'Google Calendar', 'kc-sidecar' ),
			'type'       => 'href',
			'link'       => self::entry_url(),
			'iconClass'  => 'ph ph-calendar-plus',
			'routeClass' => 'kc_sidecar_google_calendar',
			'childrens'  => array(),
		);
		return $sidebar;
	}

	/**
	 * The URL that starts the sign-on.
	 */
	public static function entry_url(): string {
		return admin_url( 'index.php?page=' . self::PAGE );
	}

	/**
	 * Redirects the current user to the sidecar, or explains why not.
	 */
	public static function go(): void {
		$user = wp_get_current_user();
		if ( ! $user || ! $user->exists() ) {
			auth_redirect();
			return;
		}
		if ( ! self::is_staff( $user ) ) {
			wp_die( esc_html__( 'Google Calendar is for clinic staff only.', 'kc-sidecar' ), '', array( 'response' => 403 ) );
		}
		if ( ! KC_Sidecar_Plugin::configured() ) {
			return; // render() explains.
		}
		nocache_headers();
		wp_redirect( self::redirect_url( $user ) ); // phpcs:ignore WordPress.Security.SafeRedirect.wp_redirect_wp_redirect -- the admin-configured sidecar is a different host by design.
		exit;
	}

	/**
	 * Shown only when the plugin is not configured yet.
	 */
	public static function render(): void {
		echo '<div class="wrap"><h1>' . esc_html__( 'Google Calendar', 'kc-sidecar' ) . '</h1><p>';
		echo esc_html__( 'The Google Calendar sidecar is not connected yet. An administrator sets its address and shared secret under Settings → KiviCare Sidecar.', 'kc-sidecar' );
		echo '</p></div>';
	}

	/**
	 * `{sidecar}/sso?token=…` for a user.
	 *
	 * @param WP_User  $user The user.
	 * @param int|null $now  Unix time (tests).
	 */
	public static function redirect_url( $user, ?int $now = null ): string {
		return KC_Sidecar_Plugin::sidecar_url() . '/sso?token=' . rawurlencode( KC_Sidecar_Signing::sso_token( KC_Sidecar_Plugin::secret(), self::payload( $user, $now ) ) );
	}

	/**
	 * The token payload, keys in PROTOCOL.md's order.
	 *
	 * @param WP_User  $user The user.
	 * @param int|null $now  Unix time (tests).
	 */
	public static function payload( $user, ?int $now = null ): array {
		return array(
			'uid'   => (int) $user->ID,
			'roles' => array_values( array_map( 'strval', (array) $user->roles ) ),
			'name'  => (string) $user->display_name,
			'email' => (string) $user->user_email,
			'exp'   => ( $now ?? time() ) + self::TTL,
			'jti'   => bin2hex( random_bytes( 16 ) ),
			'site'  => home_url(),
		);
	}

	/**
	 * Whether the user holds a staff role (administrator, clinic admin, doctor, receptionist).
	 *
	 * @param WP_User|null $user The user.
	 */
	public static function is_staff( $user ): bool {
		return $user && array_intersect( (array) $user->roles, KC_Sidecar_Plugin::STAFF_ROLES );
	}
}
